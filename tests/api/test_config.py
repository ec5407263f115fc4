"""Credentials from the environment and config.toml; the emulator fence."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rcfs.config import Credentials, ensure_private_dir, load_credentials
from rcfs.errors import ConfigError

BASE = {"RC_APP_CLIENT_ID": "cid", "RC_APP_CLIENT_SECRET": "sekrit-123", "RC_USER_JWT": "jwt-abc"}


def test_current_names_and_defaults(tmp_path: Path) -> None:
    c = load_credentials(BASE, tmp_path / "none.toml")
    assert c.server_url == "https://platform.ringcentral.com"
    assert c.media_url == "https://media.ringcentral.com"
    assert (c.client_id, c.client_secret, c.jwt) == ("cid", "sekrit-123", "jwt-abc")
    assert "sekrit" not in repr(c) and "jwt-abc" not in repr(c)


@pytest.mark.parametrize(
    "env",
    [
        {
            "RINGCENTRAL_CLIENT_ID": "cid",
            "RINGCENTRAL_CLIENT_SECRET": "s",
            "RINGCENTRAL_JWT_TOKEN": "j",
            "RINGCENTRAL_SERVER_URL": "https://platform.devtest.ringcentral.com",
        },
        {
            "RC_CLIENT_ID": "cid",
            "RC_CLIENT_SECRET": "s",
            "RC_JWT": "j",
            "RC_SERVER_URL": "https://platform.devtest.ringcentral.com/",
        },
    ],
)
def test_alternative_names(tmp_path: Path, env: dict[str, str]) -> None:
    c = load_credentials(env, tmp_path / "none.toml")
    assert (c.client_id, c.client_secret, c.jwt) == ("cid", "s", "j")
    assert c.server_url == "https://platform.devtest.ringcentral.com"
    assert c.media_url == "https://media.devtest.ringcentral.com"


def test_media_url_explicit_and_fallback(tmp_path: Path) -> None:
    c = load_credentials(BASE | {"RC_MEDIA_URL": "https://m.example.com/"}, tmp_path / "x")
    assert c.media_url == "https://m.example.com"
    c = load_credentials(BASE | {"RC_SERVER_URL": "http://127.0.0.1:8080"}, tmp_path / "x")
    assert c.media_url == "http://127.0.0.1:8080" and c.is_loopback


def test_config_file_and_env_precedence(tmp_path: Path) -> None:
    f = tmp_path / "config.toml"
    f.write_text('RC_APP_CLIENT_ID = "file-id"\nRC_APP_CLIENT_SECRET = "file-s"\nrc_user_jwt = "file-jwt"\n')
    c = load_credentials({}, f)
    assert (c.client_id, c.client_secret, c.jwt) == ("file-id", "file-s", "file-jwt")
    c = load_credentials({"RC_APP_CLIENT_ID": "env-id"}, f)
    assert (c.client_id, c.jwt) == ("env-id", "file-jwt")


def test_default_config_file_location(tmp_path: Path) -> None:
    (tmp_path / "rcfs").mkdir()
    (tmp_path / "rcfs" / "config.toml").write_text(
        '[ringcentral]\nRC_APP_CLIENT_ID = "a"\nRC_APP_CLIENT_SECRET = "b"\nRC_USER_JWT = "c"\n'
    )
    assert load_credentials({"XDG_CONFIG_HOME": str(tmp_path)}).client_id == "a"


def test_missing_names_listed_never_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load_credentials({"RC_APP_CLIENT_SECRET": "sekrit-123"}, tmp_path / "none.toml")
    msg = str(ei.value)
    assert "RC_APP_CLIENT_ID" in msg and "RC_USER_JWT" in msg
    assert "RC_APP_CLIENT_SECRET" not in msg and "sekrit" not in msg


def test_bad_toml(tmp_path: Path) -> None:
    f = tmp_path / "config.toml"
    f.write_text("this is = = not toml")
    with pytest.raises(ConfigError):
        load_credentials({}, f)


def test_emulator_credentials_fenced(tmp_path: Path) -> None:
    emu = BASE | {"RC_USER_JWT": "rcfs-emulator-jwt.abc"}
    with pytest.raises(ConfigError, match="emulator") as ei:
        load_credentials(emu, tmp_path / "x")
    assert "rcfs-emulator-jwt.abc" not in str(ei.value)
    ok = load_credentials(emu | {"RC_SERVER_URL": "http://127.0.0.1:5000"}, tmp_path / "x")
    assert ok.looks_like_emulator
    # a loopback platform with a remote media host is refused too
    c = Credentials("http://localhost:1", "a", "b", "rcfs-emulator-x", "https://media.ringcentral.com")
    with pytest.raises(ConfigError):
        c.check()


def test_plain_http_only_for_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="plain http"):
        load_credentials(BASE | {"RC_SERVER_URL": "http://platform.example.com"}, tmp_path / "x")


def test_private_dir(tmp_path: Path) -> None:
    d = ensure_private_dir(tmp_path / "a" / "b")
    assert d.is_dir() and (os.stat(d).st_mode & 0o777) == 0o700
