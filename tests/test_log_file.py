"""`--log-file` in a shared directory: nothing another user planted is followed or written.

A log path often sits in a sticky, world-writable directory (`/tmp/rcfs.log`).
There, another user can plant a symbolic link to a file of ours, a file of
theirs (0666, so that they read what we log), a hard link, or a FIFO. Each is
refused with one line and left exactly as it was; a log file of ours that
others may read becomes 0600, with a note; a missing directory is refused,
not created. As root, files are handed to `nobody` to stand for another user.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rcfs.cli.logs import setup_logging
from rcfs.errors import ConfigError

pytestmark = pytest.mark.timeout(60)

NOBODY = 65534
SECRET = "s3cr3t-client-secret-value"
JWT = "jwt-value-that-must-never-show"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for h in root.handlers:
        if h not in handlers:
            h.close()
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def sticky(tmp_path: Path) -> Path:
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(0o1777)
    return d


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("standing for another user needs root (chown to nobody)")


def snapshot(path: Path) -> tuple[object, ...] | None:
    """All a write or a chmod through `path` could change (None: it does not exist)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    data = (path.read_bytes() if stat.S_ISREG(st.st_mode)
            else os.readlink(path) if stat.S_ISLNK(st.st_mode) else None)
    return data, st.st_mode, st.st_uid, st.st_nlink, st.st_mtime_ns


def victim(tmp_path: Path) -> Path:
    """A private file of ours outside the shared directory."""
    v = tmp_path / "private"
    v.write_text("my private data\n")
    v.chmod(0o600)
    return v


def plant_symlink(tmp_path: Path, sticky: Path) -> tuple[Path, Path]:
    need_root()
    target = victim(tmp_path)
    link = sticky / "rcfs.log"
    link.symlink_to(target)
    os.lchown(link, NOBODY, NOBODY)
    return link, target


def plant_dangling_symlink(tmp_path: Path, sticky: Path) -> tuple[Path, Path]:
    need_root()
    link = sticky / "rcfs.log"
    link.symlink_to(tmp_path / "would-be-created")
    os.lchown(link, NOBODY, NOBODY)
    return link, link


def plant_foreign_file(tmp_path: Path, sticky: Path) -> tuple[Path, Path]:
    need_root()
    f = sticky / "rcfs.log"
    f.write_text("theirs\n")
    os.chown(f, NOBODY, NOBODY)
    f.chmod(0o666)
    return f, f


def plant_hard_link(tmp_path: Path, sticky: Path) -> tuple[Path, Path]:
    target = victim(tmp_path)
    link = sticky / "rcfs.log"
    os.link(target, link)
    return link, target


def plant_fifo(tmp_path: Path, sticky: Path) -> tuple[Path, Path]:
    f = sticky / "rcfs.log"
    os.mkfifo(f, 0o600)
    return f, f


def missing_directory(tmp_path: Path, sticky: Path) -> tuple[Path, Path]:
    return tmp_path / "nonexistent" / "dir" / "x.log", tmp_path / "nonexistent"


Planter = Callable[[Path, Path], tuple[Path, Path]]
REFUSED: dict[str, tuple[Planter, str]] = {
    "symlink": (plant_symlink, "it is a symbolic link"),
    "dangling symlink": (plant_dangling_symlink, "it is a symbolic link"),
    "foreign 0666 file": (plant_foreign_file, f"it belongs to another user (uid {NOBODY})"),
    "hard link": (plant_hard_link, "it has 2 hard links"),
    "fifo": (plant_fifo, "not a regular file"),
    "missing directory": (missing_directory, "does not exist"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_planted_log_file_is_refused_and_untouched(tmp_path: Path, sticky: Path, case: str) -> None:
    plant, needle = REFUSED[case]
    path, watched = plant(tmp_path, sticky)
    before = snapshot(watched)
    listing = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(ConfigError) as exc:
        setup_logging("DEBUG", path)
        logging.getLogger("rcfs").warning("this line must not land in %s", path)
    assert str(exc.value).startswith(f"cannot write the log file {path}: ")
    assert needle in str(exc.value)
    assert snapshot(watched) == before
    assert sorted(p.name for p in tmp_path.rglob("*")) == listing  # nothing created


@pytest.mark.parametrize("case", ["symlink", "foreign 0666 file", "missing directory"])
def test_cli_refuses_with_one_line(tmp_path: Path, sticky: Path, case: str) -> None:
    """`rcfs mount -f --log-file ...`: one line, exit status 1, no traceback, no secret."""
    plant, needle = REFUSED[case]
    path, watched = plant(tmp_path, sticky)
    before = snapshot(watched)
    (tmp_path / "mnt").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RC_", "RINGCENTRAL_"))}
    env |= {"RC_SERVER_URL": "http://127.0.0.1:9", "RC_APP_CLIENT_ID": "client-id",
            "RC_APP_CLIENT_SECRET": SECRET, "RC_USER_JWT": JWT,
            "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_STATE_HOME": str(tmp_path / "state"),
            "XDG_CACHE_HOME": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "rcfs", "mount", str(tmp_path / "mnt"), "-f",
                        "--log-file", str(path)],
                       env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    lines = r.stderr.splitlines()
    assert r.returncode == 1, r.stderr
    assert len(lines) == 1 and lines[0].startswith(f"rcfs: cannot write the log file {path}: "), r.stderr
    assert needle in lines[0]
    assert SECRET not in r.stderr + r.stdout and JWT not in r.stderr + r.stdout
    assert snapshot(watched) == before


@pytest.mark.parametrize("mode", [0o644, 0o666, 0o640], ids=oct)
def test_own_log_file_open_to_others_becomes_private(tmp_path: Path, sticky: Path, mode: int) -> None:
    f = sticky / "rcfs.log"
    f.write_text("earlier run\n")
    f.chmod(mode)
    setup_logging("INFO", f)
    logging.getLogger("rcfs").info("hello")
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    lines = f.read_text().splitlines()
    assert lines[0] == "earlier run"  # appended to, not truncated
    assert f"was open to other users (mode {mode:03o}); it is now 0600" in lines[1]
    assert lines[2].endswith("hello")


def test_new_log_file_is_private_whatever_the_umask(tmp_path: Path, sticky: Path) -> None:
    f = sticky / "new.log"
    old = os.umask(0)
    try:
        setup_logging("INFO", f)
    finally:
        os.umask(old)
    logging.getLogger("rcfs").info("hello")
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert f.read_text().endswith("hello\n") and "open to other users" not in f.read_text()


def test_private_own_log_file_is_appended_without_a_note(tmp_path: Path) -> None:
    f = tmp_path / "rcfs.log"
    f.write_text("earlier run\n")
    f.chmod(0o600)
    setup_logging("INFO", f)
    logging.getLogger("rcfs").info("hello")
    text = f.read_text()
    assert text.startswith("earlier run\n") and text.endswith("hello\n") and "open to other" not in text
