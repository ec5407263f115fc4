"""The mount's lifecycle: log in, index, serve, poll, unmount.

`lifecycle.py` owns the long-lived nursery (STYLE.md): the content manager's
downloads, the rest of the index (`backfill.py`), the archive
(`archive.py`), the refresher (`freshness.py`), the prefetcher
(`prefetch.py`), the control socket (`control.py`), kernel invalidations and
the signal watcher all run in it, and it is cancelled when the FUSE main
loop ends. Before the index is opened, the daemon takes the account's and the
cache directory's mount locks (`mountlock.py`: a second mount is refused) and
checks the index (`index/check.py`: a damaged one is moved aside and rebuilt).
Before the tree is served, only the newest part of the call log
is indexed (`Backfill.prefill`, a couple of seconds at most). The lifecycle is
`pyfuse3.init → pyfuse3.main → pyfuse3.close`; `close(unmount=False)` on the
error path, followed by a lazy unmount so no dead mount is left behind.

The daemon reports readiness through `Notifier`: the foreground CLI prints it,
the daemonizing parent reads it from a pipe (see `cli/daemon.py`), and a
systemd `Type=notify` unit hears it through sd_notify (`sdnotify.py`): STATUS=
lines while indexing, READY=1, a STATUS= line every `NOTIFY_STATUS_SECONDS`
while the index or the archive progresses, STOPPING=1 at unmount. Ready means
listable: once mounted, the daemon lists its own root through the kernel
(`notify.announce`) and only then says so, so mount(8), a daemonizing `rcfs mount`
and systemd return to a tree that answers.

Without the network at start, a mount that has an index of an earlier mount
serves it offline and reconnects in the background (`connection.py`); a
plain `umount` ends the daemon as `rcfs umount` does (the FUSE main loop ends,
the daemon unregisters and exits 0). Under an x-systemd.automount unit the
mountpoint is an autofs trigger, which is mounted over, never listed.

Modules: `lifecycle` (`serve`: the lifecycle and its nursery; `MountOptions`), `notify`
(`Notifier`, readiness and STATUS= lines), `mountpoint` (checks before
mounting, detaching a dead mount), `commands` (the control socket's
commands). This module re-exports the public names.
"""

from __future__ import annotations

from .lifecycle import MountOptions, default_since, serve
from .mountpoint import check_mountpoint, is_mounted, lazy_unmount
from .notify import NOTIFY_STATUS_SECONDS, Notifier, logs_to_terminal

__all__ = [
    "NOTIFY_STATUS_SECONDS",
    "MountOptions",
    "Notifier",
    "check_mountpoint",
    "default_since",
    "is_mounted",
    "lazy_unmount",
    "logs_to_terminal",
    "serve",
]
