"""Security against real mounts: no secret leaks, private files, the token stays home,
other users stay out, hostile records are contained.

Tokens come from the emulator's `GET /__emulator/tokens` (every access and
refresh token it ever issued), so the leak test knows exactly what to look for.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import json
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import FAST, EmulatorProc, is_mounted, mounted, require_fuse, run_emulator
from .faultkit import read_file, rec_id, recordings, settled, verify_cache, verify_files

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(300)]


def issued_tokens(emu: EmulatorProc) -> list[str]:
    return list(emu.admin.get("/tokens").json()["tokens"])


def test_no_secret_in_logs_status_or_errors(tmp_path: Path) -> None:
    """A whole DEBUG session (mount, list, read, refresh, token renewals, refused credentials,
    umount): no token, JWT, client secret or access_token query string anywhere."""
    require_fuse()
    outputs: list[str] = []
    with (run_emulator("--seed", "21", "--calls", "40", "--days", "10", "--rate-limits", FAST,
                       "--faults", "token_ttl=1s,5xx=0.05") as emu,
          mounted(emu, tmp_path) as m):
        files = recordings(m.path)
        outputs.append(subprocess.run(["ls", "-lR", str(m.path)], capture_output=True, text=True,
                                      timeout=60, check=True).stdout)
        for f in files[:6]:
            read_file(f)
            time.sleep(0.4)  # let tokens expire under the session
        outputs.append(subprocess.run(["getfattr", "-d", str(files[0])], capture_output=True,
                                      text=True, timeout=30, check=True).stdout)
        outputs.append(m.rcfs("refresh", str(m.path)).stdout)
        emu.admin.put("/auth", json={"jwt_valid": False, "revoke_tokens": True}).raise_for_status()
        with pytest.raises(PermissionError):
            read_file(files[-1])
        for args in (["status", str(m.path)], ["status", "--json", str(m.path)]):
            r = m.rcfs(*args)
            outputs += [r.stdout, r.stderr]
        outputs.append((m.path / ".rcfs" / "status.json").read_text())
        outputs += [(d / "calls.json").read_text() for d in {f.parent for f in files}]
        r = m.rcfs("umount", str(m.path))
        outputs += [r.stdout, r.stderr]
        assert m.proc is not None
        m.proc.wait(30)
        outputs.append(m.proc.stderr.read().decode(errors="replace") if m.proc.stderr else "")
        outputs.append(m.log_text())
        tokens = issued_tokens(emu)
        secrets = [*tokens, emu.info["jwt"], emu.info["client_secret"]]
    assert len(tokens) >= 6, "the session should have renewed its tokens several times"
    text = "\n".join(outputs)
    assert "refused the JWT" in text and "DEBUG" in text  # the test saw the interesting parts
    for secret in secrets:
        assert secret not in text, f"a secret ({secret[:12]}...) leaked"
    for needle in ("access_token=", "refresh_token=", "Bearer ", "Basic ", "assertion="):
        assert needle not in text, needle
    # The token store holds the current token (if the refused login left one), mode 0600;
    # test_files_and_directories_are_private_whatever_the_umask checks that it exists.
    for token_file in (tmp_path / "state").rglob("tokens/*.json"):
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


def test_files_and_directories_are_private_whatever_the_umask(tmp_path: Path) -> None:
    """State and cache directories 0700; token, lock and log files 0600 — even under umask 000."""
    require_fuse()
    old = os.umask(0)
    try:
        with (run_emulator("--seed", "22", "--calls", "20", "--days", "10", "--rate-limits", FAST) as emu,
              mounted(emu, tmp_path) as m):
            verify_files(emu, recordings(m.path)[:2])
            settled(m)
            dirs = [tmp_path / "state" / "rcfs", tmp_path / "cache" / "rcfs"]
            for root in dirs:
                assert root.is_dir()
                for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
                    assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
            tokens = [p for p in (tmp_path / "state").rglob("*")
                      if p.is_file() and "token" in str(p.relative_to(tmp_path))]
            assert tokens
            for f in [*tokens, m.log]:
                assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    finally:
        os.umask(old)


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def do_GET(self) -> None:
        type(self).seen.append({"path": self.path, "headers": dict(self.headers)})
        body = b"\xff\xfb" + b"\x00" * 998
        self.send_response(200)
        self.send_header("Content-Type", "audio/mpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def recording_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A third local server that records every request (and its Authorization header)."""
    seen: list[dict[str, Any]] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def calls_with_recordings(emu: EmulatorProc) -> list[dict[str, Any]]:
    return list(emu.admin.get("/recordings").json()["recordings"])


def patch(emu: EmulatorProc, call_id: str, body: dict[str, Any]) -> None:
    emu.admin.put(f"/calls/{call_id}/patch", json=body).raise_for_status()


def test_hostile_records_are_contained_and_the_token_stays_home(tmp_path: Path) -> None:
    """Records with a foreign contentUri, hostile names and malformed fields: the token
    never reaches the foreign host, bad records are skipped or refused with a logged
    reason, and everything else is served correctly."""
    require_fuse()
    with (run_emulator("--seed", "23", "--calls", "40", "--days", "10", "--rate-limits", FAST) as emu,
          recording_server() as (foreign, seen)):
        recs = calls_with_recordings(emu)
        assert len(recs) >= 8
        hostile: dict[str, dict[str, Any]] = {
            # the bearer token must not follow these
            "foreign": {"recording": {"contentUri": f"{foreign}/restapi/v1.0/account/~/recording/1/content"}},
            "bad port": {"recording": {"contentUri": "http://127.0.0.1:99999/x"}},
            # names that have broken file systems: served under a safe name
            "names": {"from": {"phoneNumber": "../../\u0000/etc\u202e", "name": "\u0000\n\x1b[31m😀/.."},
                      "to": {"extensionNumber": "/" * 300, "name": "x" * 10_000}},
            # malformed: skipped, with the reason logged
            "bad time": {"startTime": "yesterday"},
            "bad direction": {"direction": ["Inbound"]},
            "no uri": {"recording": {"contentUri": None}},
        }
        victims = dict(zip(hostile, recs, strict=False))
        for kind, body in hostile.items():
            patch(emu, victims[kind]["callId"], body)
        with mounted(emu, tmp_path) as m:
            files = {rec_id(f): f for f in recordings(m.path)}
            for kind in ("bad time", "bad direction", "no uri"):
                assert victims[kind]["id"] not in files, kind
            log = m.log_text()
            for kind, why in (("bad time", "startTime"), ("bad direction", "direction"),
                              ("no uri", "contentUri")):
                assert any(victims[kind]["callId"] in line and why in line and "bad call-log record" in line
                           for line in log.splitlines()), (kind, why)
            named = files[victims["names"]["id"]]
            assert named.name.isascii() and len(named.name) <= 200
            assert read_file(named) == emu.content(victims["names"]["id"])
            for kind in ("foreign", "bad port"):
                with pytest.raises(OSError) as exc:
                    read_file(files[victims[kind]["id"]])
                assert exc.value.errno == errno.EIO, kind
            assert "refusing to contact " + foreign in m.log_text()
            causes = " ".join(e["cause"] for e in m.status()["errors"])
            assert "refusing to contact" in causes and "unusable URL" in causes
            good = [f for rid, f in files.items()
                    if rid not in (victims["foreign"]["id"], victims["bad port"]["id"])]
            verify_files(emu, good)
            settled(m)
            assert verify_cache(emu, tmp_path / "cache" / "rcfs" / emu.info["account_id"]) == len(good)
            assert m.proc is not None and m.proc.poll() is None  # still serving
    assert seen == [], f"the foreign host was contacted: {seen}"


def _as_nobody(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd],
                          capture_output=True, text=True, errors="replace", timeout=30)


@pytest.mark.parametrize("allow_other", [False, True], ids=["private", "allow-other"])
def test_other_users_see_the_mount_only_with_allow_other(allow_other: bool) -> None:
    require_fuse()
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    # A directory other users can traverse, so only the mount itself can refuse them.
    base = Path(tempfile.mkdtemp(prefix="rcfs-sec-"))
    try:
        base.chmod(0o755)
        with (run_emulator("--seed", "24", "--calls", "20", "--days", "10", "--rate-limits", FAST) as emu,
              mounted(emu, base, *(["--allow-other"] if allow_other else [])) as m):
            f = recordings(m.path)[0]
            assert read_file(f) == emu.content(rec_id(f))  # the owner reads
            ls = _as_nobody("ls", str(m.path))
            cat = _as_nobody("cat", str(f))
            stat_ = _as_nobody("stat", str(f))
            if allow_other:
                assert ls.returncode == 0 and ls.stdout.split(), ls.stderr
                assert cat.returncode == 0, cat.stderr  # files are 0444
                assert stat_.returncode == 0
            else:
                for r in (ls, cat, stat_):
                    assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr
            assert is_mounted(m.path)
    finally:
        with contextlib.suppress(OSError):
            if not is_mounted(base / "mnt"):
                shutil.rmtree(base)


def test_status_json_is_not_a_secret_channel(tmp_path: Path) -> None:
    """status.json opened by another process while tokens renew: well-formed, token-free."""
    require_fuse()
    with (run_emulator("--seed", "25", "--calls", "10", "--days", "10", "--rate-limits", FAST,
                       "--faults", "token_ttl=1s") as emu,
          mounted(emu, tmp_path) as m):
        f = recordings(m.path)[0]
        for _ in range(3):
            read_file(f)
            time.sleep(0.5)
            json.loads((m.path / ".rcfs" / "status.json").read_bytes())
        text = (m.path / ".rcfs" / "status.json").read_text()
        for secret in [*issued_tokens(emu), emu.info["jwt"], emu.info["client_secret"]]:
            assert secret not in text
