"""set_read_ahead without mounting: which device it writes, in whole pages, and
what it leaves alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from rcfs.mount.mountpoint import set_read_ahead

MP = "/mnt/calls"


def mountinfo(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "mountinfo"
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)


def rcfs_line(dev: str, mp: str = MP, fstype: str = "fuse.rcfs") -> str:
    return f"77 30 {dev} / {mp} ro,nosuid,nodev,noatime shared:1 - {fstype} rcfs ro,user_id=0"


@pytest.fixture
def bdi(tmp_path: Path) -> Path:
    for dev in ("0:51", "0:52"):
        (tmp_path / "bdi" / dev).mkdir(parents=True)
        (tmp_path / "bdi" / dev / "read_ahead_kb").write_text("128\n")
    return tmp_path / "bdi"


def kb(bdi: Path, dev: str) -> str:
    return (bdi / dev / "read_ahead_kb").read_text().strip()


def test_writes_the_topmost_rcfs_mounts_device_in_whole_pages(tmp_path: Path, bdi: Path) -> None:
    info = mountinfo(tmp_path, rcfs_line("0:51"), rcfs_line("0:52"))  # 0:52 mounted on top
    assert set_read_ahead(MP, 1 << 20, bdi_root=str(bdi), mountinfo=info)
    assert (kb(bdi, "0:52"), kb(bdi, "0:51")) == ("1024", "128")
    assert set_read_ahead(MP, 5000, bdi_root=str(bdi), mountinfo=info)
    assert kb(bdi, "0:52") == "8"  # 5,000 bytes: two pages


@pytest.mark.parametrize("lines", [
    (),  # not mounted (any more)
    (rcfs_line("0:51", mp="/mnt/other"),),
    (rcfs_line("0:51", fstype="fuse.sshfs"),),  # someone else's mount on top
])
def test_leaves_what_is_not_its_own_mount(tmp_path: Path, bdi: Path, lines: tuple[str, ...]) -> None:
    assert not set_read_ahead(MP, 1 << 20, bdi_root=str(bdi), mountinfo=mountinfo(tmp_path, *lines))
    assert kb(bdi, "0:51") == "128"


def test_zero_leaves_it_and_a_failed_write_is_not_an_error(tmp_path: Path, bdi: Path) -> None:
    info = mountinfo(tmp_path, rcfs_line("0:51"))
    assert not set_read_ahead(MP, 0, bdi_root=str(bdi), mountinfo=info)
    assert kb(bdi, "0:51") == "128"
    assert not set_read_ahead(MP, 1 << 20, bdi_root=str(tmp_path / "no-such-bdi"), mountinfo=info)
