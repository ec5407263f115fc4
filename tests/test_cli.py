"""Command-line parsing and formatting, without mounting anything."""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rcfs import cli


def test_parse_size() -> None:
    assert cli.parse_size("1048576") == 1048576
    assert cli.parse_size("500M") == 500 * 1024**2
    assert cli.parse_size("10G") == 10 * 1024**3
    assert cli.parse_size("1.5GiB") == int(1.5 * 1024**3)
    for bad in ("", "lots", "10X", "-1G"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.parse_size(bad)


def test_parse_read_ahead() -> None:
    from rcfs.cli.options import parse_read_ahead

    assert parse_read_ahead("0") == 0  # the kernel's own
    assert parse_read_ahead("1M") == 1 << 20
    assert parse_read_ahead("4K") == 4096
    assert parse_read_ahead("5000") == 8192  # whole 4 KiB pages, rounded up
    assert parse_read_ahead("64M") == 64 << 20
    for bad in ("1", "2K", "4095", "65M", "1T", "lots"):  # 1 to 3 KiB would turn it off
        with pytest.raises(argparse.ArgumentTypeError):
            parse_read_ahead(bad)


def test_parse_since() -> None:
    assert cli.parse_since("2026-09-01") == datetime(2026, 9, 1, tzinfo=UTC)
    assert cli.parse_since("2026-09-01T08:00:00+02:00") == datetime(2026, 9, 1, 6, tzinfo=UTC)
    days = datetime.now(UTC) - cli.parse_since("30d")
    assert timedelta(days=30) - timedelta(minutes=1) < days < timedelta(days=30, minutes=1)
    with pytest.raises(argparse.ArgumentTypeError):
        cli.parse_since("last tuesday")


def test_parse_umask_and_tz() -> None:
    assert cli.parse_umask("027") == 0o027
    with pytest.raises(argparse.ArgumentTypeError):
        cli.parse_umask("999")
    assert str(cli.parse_tz("Europe/Paris")) == "Europe/Paris"
    with pytest.raises(argparse.ArgumentTypeError):
        cli.parse_tz("Mars/Base")


def test_format_status_reads_every_section() -> None:
    text = cli.format_status({
        "account": "42", "index": {"recordings": 7, "records": 5, "oldest": "a", "newest": "b"},
        "cache": {"bytes": 2048, "limit": 4096, "entries": 1, "hits": 3, "misses": 4},
        "downloads": {"active": 1, "queued": 2, "done": 3, "bytes": 10},
        "rate_limits": {"Heavy": {"limit": 10, "remaining": 9, "window": 60, "paused_until": None}},
        "requests": {"Heavy": {"sent": 11, "throttled_429": 0, "errors": 1}},
        "errors": [{"time": "t", "cause": "boom"}],
    })
    assert "7 recordings in 5 calls" in text
    assert "2.0 KiB of 4.0 KiB" in text
    assert "4.0 KiB, 1 recording;" in text  # one, not "1 recordings"
    assert "Heavy    9/10 per 60 s; sent 11" in text
    assert "boom" in text


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rcfs", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    for args in (["mount"], ["frobnicate"], ["mount", str(tmp_path), "--poll-interval", "-3"]):
        r = run(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("rcfs: error:")


def test_missing_credentials_named(tmp_path: Path) -> None:
    mp = tmp_path / "mp"
    mp.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    r = run("mount", str(mp), env=env)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "RC_APP_CLIENT_ID" in r.stderr or "RC_USER_JWT" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_status_of_a_plain_directory(tmp_path: Path) -> None:
    r = run("status", str(tmp_path))
    assert r.returncode == 1 and "not an rcfs mount" in r.stderr


def test_help_documents_every_mount_option() -> None:
    out = run("mount", "--help").stdout
    for opt in ("--foreground", "--tz", "--since", "--cache-dir", "--cache-size", "--poll-interval",
                "--allow-other", "--uid", "--gid", "--umask", "--log-level", "--log-file"):
        assert opt in out, opt


def test_domain_errors_are_found_inside_exception_groups() -> None:
    from rcfs.cli.daemon import _domain_error
    from rcfs.errors import ConfigError

    inner = ConfigError("cannot mount on /x: busy")
    group = BaseExceptionGroup("nursery", [ValueError("other"), ExceptionGroup("n", [inner])])
    assert _domain_error(group) is inner
    assert _domain_error(ValueError("plain")) is None


def test_an_os_error_is_found_inside_a_servers_exception_groups() -> None:
    from rcfs.errors import found_in

    busy = OSError(98, "Address already in use")
    group = ExceptionGroup("server", [ExceptionGroup("listeners", [busy])])
    assert found_in(group, OSError) is busy
    assert found_in(ExceptionGroup("n", [ValueError("x")]), OSError) is None


def test_interrupts_are_recognised_inside_exception_groups() -> None:
    from rcfs.cli.daemon import is_interrupt

    assert is_interrupt(KeyboardInterrupt())
    assert is_interrupt(BaseExceptionGroup("n", [BaseExceptionGroup("m", [KeyboardInterrupt()])]))
    assert not is_interrupt(BaseExceptionGroup("n", [KeyboardInterrupt(), ValueError("bug")]))
    assert not is_interrupt(ValueError("bug"))


def test_status_times_are_local_to_the_second_with_an_age() -> None:
    from rcfs.cli.display import when

    now = 1_796_083_200.0  # 2026-12-01T00:00:00Z
    text = when("2026-11-30T23:57:00.123456+00:00", now=now)
    assert text.endswith("(3 min ago)") and "." not in text.split(" (")[0]
    assert when(now + 7200, now=now).endswith("(in 2.0 h)")
    assert when(None) == "-" and when("not a time") == "not a time"
