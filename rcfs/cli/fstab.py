"""`rcfs` as mount(8)'s helper: `mount -t fuse.rcfs rcfs /mnt/calls -o since=90d,...`.

Owns: recognising the command line mount.fuse3 runs and turning it into the
`rcfs mount` command line. For `mount -t fuse.rcfs SOURCE MOUNTPOINT -o
OPTIONS` (an fstab line, a systemd .mount unit), mount(8) runs
/sbin/mount.fuse3, which runs `/bin/sh -c 'rcfs SOURCE MOUNTPOINT -o
OPTIONS'`: `rcfs` is looked up on /bin/sh's default PATH (mount(8) drops the
caller's PATH, HOME, SHELL and LD_*, and mount.fuse3 sets HOME again), so it
must be installed there (a link in /usr/local/bin: `scripts/setup` makes it
when run as root). Measured with
util-linux 2.38 and fuse3 3.14: mount(8) puts `rw` (or `ro`) first, drops
`_netdev`, `noauto`, `auto`, `nofail`, `user`, `users`, `defaults`,
`comment=`, `x-*` and the access-time options it handles itself;
mount.fuse3 adds `dev,suid` for root (or `nodev,nosuid`), and consumes its
own `setuid=` and `drop_privileges`. SOURCE is free text (`rcfs` by
convention) and ignored.

Every long option of `rcfs mount` is an `-o` key, with `_` or `-` between
words: `cache_size=50G` is `--cache-size 50G`, `allow_other` is
`--allow-other`, `no_keep_deleted` is `--no-keep-deleted`, `config=FILE` is
`--config FILE`. The keys are read from the parser's own actions
(`options._add_mount_options`), so a new option is a new key with no second
list to keep in step. The generic mount options, and the fstab and systemd
ones should they reach rcfs, are accepted and ignored: rcfs always mounts
read-only, nosuid, nodev and noatime. Anything else is refused with one line
and exit status 1, which mount(8) shows. Values are checked by the `rcfs
mount` parser afterwards. A value may hold a comma when quoted
(`log_file="/var/log/a,b.log"`) or escaped (`\\,`).
"""

from __future__ import annotations

import argparse
import difflib
from dataclasses import dataclass

from rcfs.errors import ConfigError

# What `mount -t fuse.rcfs` may pass that rcfs has no use for: the kernel's
# generic options (rcfs is read-only, nosuid, nodev, noatime whatever they
# say), fstab's and systemd's own (normally stripped by mount(8)), and FUSE's
# `default_permissions` (always on).
IGNORED = frozenset({
    "rw", "ro", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "async", "sync",
    "dirsync", "atime", "noatime", "diratime", "nodiratime", "relatime", "norelatime",
    "strictatime", "nostrictatime", "lazytime", "nolazytime", "iversion", "noiversion",
    "mand", "nomand", "silent", "loud", "auto", "noauto", "nofail", "_netdev", "user",
    "nouser", "users", "owner", "group", "defaults", "default_permissions", "bind",
})
IGNORED_PREFIXES = ("x-", "comment=")
# Flags mount(8) may hand a helper (no mtab, sloppy, verbose): nothing to do for rcfs.
IGNORED_FLAGS = frozenset({"-n", "-s", "-v"})
_NOT_KEYS = frozenset({"help", "ready_fd"})


@dataclass(frozen=True)
class Key:
    option: str  # the long option, e.g. "--cache-size"
    takes_value: bool


def mount_keys(parser: argparse.ArgumentParser | None = None) -> dict[str, Key]:
    """`-o` key -> `rcfs mount` option, read from the parser's actions."""
    if parser is None:
        from rcfs.cli.options import _add_mount_options, _Parser

        parser = _Parser(prog="rcfs mount", add_help=False)
        _add_mount_options(parser)
    keys: dict[str, Key] = {}
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        for option in action.option_strings:
            if not option.startswith("--"):
                continue
            name = option[2:].replace("-", "_")
            if name in _NOT_KEYS:
                continue
            keys[name] = Key(option, action.nargs != 0)
    return keys


def is_helper_call(argv: list[str]) -> bool:
    """Whether `argv` is mount.fuse3's `SOURCE MOUNTPOINT -o OPTIONS` (also `mount
    MOUNTPOINT -o OPTIONS`, which means the same); another subcommand is not."""
    if not any(a == "-o" or (a.startswith("-o") and not a.startswith("--")) for a in argv):
        return False
    return argv[0] == "mount" or argv[0] not in _subcommands()


def _subcommands() -> set[str]:
    from rcfs.cli.options import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def split_options(text: str) -> list[str]:
    """`a=1,b="x,y",c\\,d` -> ["a=1", "b=x,y", "c,d"] (mount(8)'s quoting, fuse_opt's escape)."""
    items: list[str] = []
    current: list[str] = []
    quoted = False
    chars = iter(text)
    for c in chars:
        if c == "\\":
            current.append(next(chars, "\\"))
        elif c == '"':
            quoted = not quoted
        elif c == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(c)
    if quoted:
        raise ConfigError(f"mount options {text!r}: a quote is not closed")
    items.append("".join(current))
    return [item for item in items if item]


def translate(options: list[str], keys: dict[str, Key] | None = None) -> list[str]:
    """`-o` items -> `rcfs mount` arguments; ConfigError (one line) for what is not a key."""
    keys = mount_keys() if keys is None else keys
    args: list[str] = []
    for item in options:
        name, eq, value = item.partition("=")
        norm = name.strip().replace("-", "_")
        if norm in IGNORED or item.startswith(IGNORED_PREFIXES):
            continue
        key = keys.get(norm)
        if key is None:
            close = difflib.get_close_matches(norm, list(keys), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"unknown mount option {name!r}{hint} (every long option of "
                              "rcfs mount is a key: cache_size=10G, allow_other; see rcfs mount --help)")
        if key.takes_value and not eq:
            raise ConfigError(f"mount option {norm} needs a value ({norm}=...)")
        if not key.takes_value and eq:
            raise ConfigError(f"mount option {norm} takes no value (write {norm}, not {item})")
        args += [key.option, value] if key.takes_value else [key.option]
    return args


def to_mount_argv(argv: list[str]) -> list[str]:
    """mount.fuse3's command line -> `["mount", MOUNTPOINT, --option, ...]`."""
    options: list[str] = []
    positional: list[str] = []
    foreground: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "-o":
            if i + 1 >= len(argv):
                raise ConfigError("-o needs the mount options (-o since=90d,tz=UTC)")
            options += split_options(argv[i + 1])
            i += 2
            continue
        if arg.startswith("-o") and not arg.startswith("--"):
            options += split_options(arg[2:])
        elif arg in ("--foreground", "-f"):
            foreground = ["--foreground"]  # a hand-typed call; mount(8) never passes it
        elif arg.startswith("-") and arg not in IGNORED_FLAGS:
            raise ConfigError(f"unknown argument {arg!r} (rcfs SOURCE MOUNTPOINT -o OPTIONS)")
        elif not arg.startswith("-"):
            positional.append(arg)
        i += 1
    if len(positional) == 2:
        positional = positional[1:]  # SOURCE ("rcfs", or "mount"): ignored
    if len(positional) != 1:
        raise ConfigError("usage: rcfs SOURCE MOUNTPOINT -o OPTIONS (as mount.fuse3 runs it; "
                          f"got {len(positional)} arguments besides the options)")
    return ["mount", positional[0], *translate(options), *foreground]
