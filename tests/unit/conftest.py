"""Fixtures of the unit tests; record builders live in rcfs_records.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rcfs.index import Index


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    idx = Index(tmp_path / "index.sqlite")
    try:
        yield idx
    finally:
        idx.close()
