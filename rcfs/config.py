"""Credentials and per-user directories.

Owns: reading RingCentral credentials from the environment or
`$XDG_CONFIG_HOME/rcfs/config.toml`, deriving the media host, fencing the
emulator's fake credentials away from real servers, the private
state/cache/config directories (under $HOME from the password database when
HOME is unset, as under systemd), and which account a credential set logged in
to last (`remember_account`, for a mount that starts without the network). It
performs no network I/O and never logs or formats a secret.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import pwd
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from rcfs.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_SERVER_URL = "https://platform.ringcentral.com"
EMULATOR_JWT_PREFIX = "rcfs-emulator-"

# First name wins: RingCentral's current samples, the SDKs' names, older samples.
_ENV_NAMES: dict[str, tuple[str, ...]] = {
    "server_url": ("RC_SERVER_URL", "RINGCENTRAL_SERVER_URL"),
    "client_id": ("RC_APP_CLIENT_ID", "RINGCENTRAL_CLIENT_ID", "RC_CLIENT_ID"),
    "client_secret": ("RC_APP_CLIENT_SECRET", "RINGCENTRAL_CLIENT_SECRET", "RC_CLIENT_SECRET"),
    "jwt": ("RC_USER_JWT", "RINGCENTRAL_JWT_TOKEN", "RINGCENTRAL_JWT", "RC_JWT"),
    "media_url": ("RC_MEDIA_URL", "RINGCENTRAL_MEDIA_URL"),
}
_REQUIRED = ("client_id", "client_secret", "jwt")
# Redis shared by several mounts (--redis): RCFS_REDIS_URL in the environment (never
# a bare REDIS_URL there, which other programs set), RCFS_REDIS_URL or redis_url in
# config.toml (keys are case-insensitive).
_REDIS_ENV = "RCFS_REDIS_URL"
_REDIS_FILE_KEYS = ("RCFS_REDIS_URL", "REDIS_URL")
_REDIS_SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys")
_KNOWN_KEYS = frozenset([*(n for names in _ENV_NAMES.values() for n in names), *_REDIS_FILE_KEYS])
_SECRET_KEYS = frozenset(_ENV_NAMES["client_secret"] + _ENV_NAMES["jwt"])


def is_loopback_url(url: str) -> bool:
    """True if `url` names this machine (localhost or a loopback address)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_media_url(server_url: str) -> str:
    """`platform.` → `media.` in the host; otherwise the server itself."""
    parts = urlsplit(server_url)
    host = parts.hostname or ""
    if host.startswith("platform."):
        netloc = parts.netloc.replace(host, "media." + host[len("platform.") :], 1)
        return parts._replace(netloc=netloc).geturl().rstrip("/")
    return server_url.rstrip("/")


@dataclass(frozen=True)
class Credentials:
    """What the API client needs to log in. The repr hides the secrets."""

    server_url: str
    client_id: str
    client_secret: str = field(repr=False)
    jwt: str = field(repr=False)
    media_url: str = ""
    # Not RingCentral's: the Redis that mounts of these credentials share (may hold a password).
    redis_url: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "server_url", self.server_url.rstrip("/"))
        media = self.media_url.rstrip("/") or default_media_url(self.server_url)
        object.__setattr__(self, "media_url", media)

    @property
    def is_loopback(self) -> bool:
        return is_loopback_url(self.server_url)

    @property
    def looks_like_emulator(self) -> bool:
        return self.jwt.startswith(EMULATOR_JWT_PREFIX)

    def check(self) -> None:
        """Raise ConfigError for unusable or unsafe combinations (never shows a secret)."""
        for name in ("server_url", "media_url"):
            url = getattr(self, name)
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"{name} must be an http(s) URL, got {url!r}")
            try:
                parts.port  # noqa: B018 -- raises ValueError for a bad port
            except ValueError:
                raise ConfigError(f"{name} {url!r} has an invalid port") from None
            if parts.scheme == "http" and not is_loopback_url(url):
                raise ConfigError(f"{name} {url!r}: plain http is only allowed for loopback hosts")
        if self.redis_url and urlsplit(self.redis_url).scheme not in _REDIS_SCHEMES:
            raise ConfigError("the Redis URL (RCFS_REDIS_URL, redis_url) must start with "
                              "redis://, rediss:// or unix://")
        if self.looks_like_emulator and not (self.is_loopback and is_loopback_url(self.media_url)):
            raise ConfigError(
                "refusing emulator credentials (JWT starts with "
                f"{EMULATOR_JWT_PREFIX!r}) for the non-loopback server {self.server_url!r}"
            )


def _home(env: Mapping[str, str]) -> Path:
    """$HOME, or the password database's home when HOME is unset, empty or relative
    (systemd starts services without HOME unless User= is set)."""
    home = env.get("HOME", "")
    return Path(home) if os.path.isabs(home) else Path(pwd.getpwuid(os.getuid()).pw_dir)


def _xdg(name: str, default: str, env: Mapping[str, str] | None = None) -> Path:
    """An XDG base directory: the variable if it is an absolute path (the XDG spec
    ignores relative ones), else `default` under the home directory."""
    env = os.environ if env is None else env
    value = env.get(name, "")
    return Path(value) if os.path.isabs(value) else _home(env) / default


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config", env) / "rcfs"


def ensure_private_dir(path: Path) -> Path:
    """mkdir -p, then chmod 0700: the directory holds tokens or cached calls."""
    try:
        # Every directory created here is private, not only the last one
        # (mkdir(parents=True) gives the parents the umask's mode).
        missing = []
        parent = path
        while not parent.exists() and parent != parent.parent:
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=0o700)
            os.chmod(directory, 0o700)
        os.chmod(path, 0o700)
    except OSError as exc:
        raise ConfigError(f"cannot use {path} as a private directory: {exc.strerror}") from None
    return path


def state_dir() -> Path:
    return ensure_private_dir(_xdg("XDG_STATE_HOME", ".local/state") / "rcfs")


def cache_root() -> Path:
    return ensure_private_dir(_xdg("XDG_CACHE_HOME", ".cache") / "rcfs")


# The account id each credential set logged in to, so that a mount can find its
# account's state and cache directories without the network (an offline start).
_KNOWN_ACCOUNTS = "account-ids"


def remembered_account(state: Path, fingerprint: str) -> str | None:
    """The account id last seen with the credentials of `fingerprint`, if recorded."""
    try:
        with open(state / _KNOWN_ACCOUNTS / f"{fingerprint}.json", "rb") as f:
            data = json.loads(f.read(4096))
    except (OSError, ValueError):
        return None
    account = data.get("account") if isinstance(data, dict) else None
    return account if isinstance(account, str) and account else None


def remember_account(state: Path, fingerprint: str, account: str) -> None:
    """Record that the credentials of `fingerprint` belong to `account` (0600, atomic).

    The fingerprint is a one-way hash of the credentials; the file holds no secret."""
    if remembered_account(state, fingerprint) == account:
        return
    folder = ensure_private_dir(state / _KNOWN_ACCOUNTS)
    path = folder / f"{fingerprint}.json"
    tmp = folder / f".{fingerprint}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"account": account}, f)
        os.replace(tmp, path)
    except OSError as exc:  # the next mount needs the network to find its index: no more
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        log.warning("cannot record the account id in %s: %s", path, exc.strerror)


def _read_config_file(path: Path) -> dict[str, str]:
    try:
        with path.open("rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        # The message names a position, never the file's content (it holds secrets).
        reason = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise ConfigError(f"cannot read {path}: {reason}") from None
    # Keys as in the environment (RC_SERVER_URL = "..."), case-insensitive;
    # an [rcfs] or [ringcentral] table is accepted as well as top level.
    flat: dict[str, str] = {}
    tables = [data] + [v for k, v in data.items() if k in ("rcfs", "ringcentral")]
    for table in tables:
        if isinstance(table, dict):
            for key, value in table.items():
                if isinstance(value, str):
                    flat[key.upper()] = value
                elif key.upper() in _KNOWN_KEYS:
                    raise ConfigError(
                        f"{path}: {key} must be a string, not {type(value).__name__}"
                    )
    if mode & 0o077 and any(n in flat for n in _SECRET_KEYS):
        log.warning("rcfs: %s holds secrets but other users may read it (mode %03o): "
                    "chmod 600 %s", path, mode & 0o777, path)
    return flat


def load_credentials(env: Mapping[str, str] | None = None, config_file: Path | None = None) -> Credentials:
    """Credentials from `env` (default os.environ), falling back to config.toml.

    The environment wins over the file, key by key. Raises ConfigError naming
    the missing keys (never their values).
    """
    env = os.environ if env is None else env
    if config_file is None:
        config_file = config_dir(env) / "config.toml"
    file_values = _read_config_file(config_file)
    values: dict[str, str] = {}
    for key, names in _ENV_NAMES.items():
        for source in (env, file_values):
            found = next((source[n].strip() for n in names if source.get(n, "").strip()), "")
            if found:
                values[key] = found
                break
    missing = [_ENV_NAMES[k][0] for k in _REQUIRED if k not in values]
    if missing:
        raise ConfigError(
            "missing RingCentral credentials: "
            + ", ".join(missing)
            + f" (set them in the environment or in {config_file})"
        )
    creds = Credentials(
        server_url=values.get("server_url", DEFAULT_SERVER_URL),
        client_id=values["client_id"],
        client_secret=values["client_secret"],
        jwt=values["jwt"],
        media_url=values.get("media_url", ""),
        redis_url=(env.get(_REDIS_ENV, "").strip()
                   or next((file_values[k].strip() for k in _REDIS_FILE_KEYS
                            if file_values.get(k, "").strip()), "")),
    )
    creds.check()
    return creds
