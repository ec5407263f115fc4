"""Bad command lines, configs and environments: one clear line, a non-zero exit, no traceback.

Every case runs the real `python -m rcfs` in a subprocess and fails before
any mount or network request. The secrets in the environment never appear in
what it prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SECRET = "s3cr3t-client-secret-value"
JWT = "jwt-value-that-must-never-show"
GOOD_ENV = {
    "RC_SERVER_URL": "https://platform.ringcentral.com",
    "RC_APP_CLIENT_ID": "client-id",
    "RC_APP_CLIENT_SECRET": SECRET,
    "RC_USER_JWT": JWT,
}
GOOD_TOML = (f'RC_APP_CLIENT_ID = "id"\nRC_APP_CLIENT_SECRET = "{SECRET}"\n'
             f'RC_USER_JWT = "{JWT}"\n').encode()


@dataclass
class Case:
    args: list[str]
    needle: str
    env: dict[str, str] = field(default_factory=dict)  # "" removes a variable
    config: bytes | None = None  # content of config.toml, if any
    config_mode: int = 0o600
    exit_code: int | None = None  # None: any non-zero
    drop_dac: bool = False  # run without CAP_DAC_OVERRIDE, so file modes bind root too


NO_CREDS = {k: "" for k in GOOD_ENV}
CASES = {
    "config not utf-8": Case(["mount", "{mnt}"], "not UTF-8", NO_CREDS, b"\xff\xfe RC = 1"),
    "config not toml": Case(["mount", "{mnt}"], "cannot read", NO_CREDS, b'RC_USER_JWT = "x\n[oops'),
    "config wrong type": Case(["mount", "{mnt}"], "RC_APP_CLIENT_ID must be a string", NO_CREDS,
                              b"RC_APP_CLIENT_ID = 5\n"),
    "config unreadable": Case(["mount", "{mnt}"], "Permission denied", NO_CREDS, GOOD_TOML,
                              config_mode=0o000, drop_dac=True),
    "config missing keys": Case(["mount", "{mnt}"], "missing RingCentral credentials: RC_USER_JWT",
                                NO_CREDS, b'RC_APP_CLIENT_ID = "a"\nRC_APP_CLIENT_SECRET = "b"\n'),
    "server not a url": Case(["mount", "{mnt}"], "http(s) URL", {"RC_SERVER_URL": "platform"}),
    "server bad port": Case(["mount", "{mnt}"], "invalid port",
                            {"RC_SERVER_URL": "https://platform.ringcentral.com:99999"}),
    "server plain http": Case(["mount", "{mnt}"], "plain http", {"RC_SERVER_URL": "http://example.com"}),
    "media not http": Case(["mount", "{mnt}"], "media_url", {"RC_MEDIA_URL": "ftp://media.example.com"}),
    "emulator jwt, real server": Case(["mount", "{mnt}"], "refusing emulator credentials",
                                      {"RC_USER_JWT": "rcfs-emulator-jwt." + JWT}),
    "since overflow": Case(["mount", "{mnt}", "--since", "99999999999d"], "invalid date", exit_code=2),
    "since nonsense": Case(["mount", "{mnt}", "--since", "yesterday"], "invalid date", exit_code=2),
    "poll nan": Case(["mount", "{mnt}", "--poll-interval", "nan"], "positive", exit_code=2),
    "poll negative": Case(["mount", "{mnt}", "--poll-interval", "-5"], "positive", exit_code=2),
    "umask": Case(["mount", "{mnt}", "--umask", "999"], "umask", exit_code=2),
    "uid": Case(["mount", "{mnt}", "--uid", "root"], "--uid", exit_code=2),
    "cache size": Case(["mount", "{mnt}", "--cache-size", "-1G"], "size", exit_code=2),
    "log level": Case(["mount", "{mnt}", "--log-level", "LOUD"], "--log-level", exit_code=2),
    "log file is a dir": Case(["mount", "{mnt}", "-f", "--log-file", "{tmp}"], "cannot write the log file"),
    "daemon log file is a dir": Case(["mount", "{mnt}", "--log-file", "{tmp}"], "cannot write the log file"),
    "state home is a file": Case(["mount", "{mnt}"], "private directory",
                                 {"XDG_STATE_HOME": "{tmp}/afile"}),
    "mountpoint a file": Case(["mount", "{tmp}/afile"], "not a directory"),
    "no command": Case([], "required", exit_code=2),
    "unknown command": Case(["mnt"], "invalid choice", exit_code=2),
    "status not a mount": Case(["status", "{mnt}"], "not an rcfs mount"),
    "refresh not a mount": Case(["refresh", "{mnt}"], "not an rcfs mount"),
    "umount not mounted": Case(["umount", "{mnt}"], "not mounted"),
    "emulator bad fault": Case(["emulator", "--faults", "boom=1"], "unknown fault", exit_code=2),
    "emulator bad limits": Case(["emulator", "--rate-limits", "heavy=0/2s"], "rate limit", exit_code=2),
    "emulator bad port": Case(["emulator", "--port", "70000"], "port", exit_code=2),
}


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "mnt").mkdir()
    (tmp_path / "afile").write_text("x")
    yield tmp_path


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line(name: str, home: Path) -> None:
    case = CASES[name]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RC_", "RINGCENTRAL_"))}
    env |= GOOD_ENV | {"XDG_CONFIG_HOME": str(home / "config"), "XDG_STATE_HOME": str(home / "state"),
                       "XDG_CACHE_HOME": str(home / "cache")}
    for key, value in case.env.items():
        if value:
            env[key] = value.format(tmp=home, mnt=home / "mnt")
        else:
            env.pop(key, None)
    if case.config is not None:
        cfg = home / "config" / "rcfs" / "config.toml"
        cfg.parent.mkdir(parents=True)
        cfg.write_bytes(case.config)
        cfg.chmod(case.config_mode)
    cmd = [sys.executable, "-m", "rcfs", *(a.format(tmp=home, mnt=home / "mnt") for a in case.args)]
    if case.drop_dac:
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    err = r.stderr.strip()
    assert r.returncode != 0, (r.returncode, err)
    if case.exit_code is not None:
        assert r.returncode == case.exit_code, (r.returncode, err)
    assert "Traceback" not in err, err
    lines = err.splitlines()
    # argparse usage errors print the usage line first; ours print exactly one line.
    assert len(lines) == 1 or (r.returncode == 2 and len(lines) <= 3 and lines[0].startswith("usage")), err
    assert case.needle in lines[-1], err
    assert lines[-1].startswith("rcfs"), err
    for secret in (SECRET, JWT):
        assert secret not in r.stdout + r.stderr


def test_config_readable_by_others_is_flagged(home: Path) -> None:
    cfg = home / "config" / "rcfs" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_bytes(GOOD_TOML + b'RC_SERVER_URL = "https://platform.ringcentral.com:99999"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RC_", "RINGCENTRAL_"))}
    env["XDG_CONFIG_HOME"] = str(home / "config")
    for mode, flagged in ((0o644, True), (0o640, True), (0o600, False)):
        cfg.chmod(mode)
        r = subprocess.run([sys.executable, "-m", "rcfs", "mount", str(home / "mnt")], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "invalid port" in r.stderr, r.stderr
        assert ("chmod 600" in r.stderr) is flagged, (mode, r.stderr)
        assert SECRET not in r.stderr and JWT not in r.stderr
