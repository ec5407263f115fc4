"""The tree: what the indexed account looks like as directories and files.

Owns: inode numbers, the year/month/day directories, recording files,
per-day `calls.json`, the hidden `.rcfs/status.json`, attributes, xattrs and
per-directory listing caches. Answers from the index, never from the API.
Raises `NotFound` for unknown names and inodes, never an errno.

Must not: import pyfuse3 or httpx, download content, touch the kernel's caches
(it returns the inodes to invalidate; fuse_ops does the rest), or run on a
worker thread (no locking: one trio thread owns a Vfs; only `run` hands index
writes to worker threads).

Modules, each with the design notes of its part: `tree` (`Vfs`, the
operations, the recordings it has served, invalidation and the cache budget),
`inodes` (the inode number scheme and `Node`), `listings` (which years,
months and days exist; day membership, directory times), `days` (a day's
files and its calls.json), `sizes` (sizes learned from downloads and their
write-behind).
"""

from __future__ import annotations

from .inodes import (
    CALLS_JSON,
    CONTROL_DIR_INO,
    CONTROL_DIR_NAME,
    RECORDING_BASE,
    ROOT_INO,
    STATUS_INO,
    STATUS_NAME,
    Node,
    calls_json_ino,
    dir_ino,
)
from .tree import Vfs

__all__ = [
    "CALLS_JSON",
    "CONTROL_DIR_INO",
    "CONTROL_DIR_NAME",
    "RECORDING_BASE",
    "ROOT_INO",
    "STATUS_INO",
    "STATUS_NAME",
    "Node",
    "Vfs",
    "calls_json_ino",
    "dir_ino",
]
