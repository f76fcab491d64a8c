"""Secrets at rest: MultiFernet encryption with rotation."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from devpush import crypto
from devpush.errors import ConfigError
from devpush.settings import Settings


def test_round_trip_and_ciphertext_hides_value() -> None:
    token = crypto.encrypt("hunter2-secret")
    assert "hunter2" not in token
    assert crypto.decrypt(token) == "hunter2-secret"
    assert crypto.decrypt_json(crypto.encrypt_json({"A": "1"})) == {"A": "1"}


def test_rotation_keeps_old_secrets_readable(monkeypatch: pytest.MonkeyPatch) -> None:
    old_key = Fernet.generate_key().decode()
    monkeypatch.setenv("DEVPUSH_ENCRYPTION_KEYS", old_key)
    from devpush.settings import get_settings

    get_settings.cache_clear()
    crypto.get_fernet.cache_clear()
    token = crypto.encrypt("value")
    new_key = Fernet.generate_key().decode()
    monkeypatch.setenv("DEVPUSH_ENCRYPTION_KEYS", f"{new_key},{old_key}")
    get_settings.cache_clear()
    crypto.get_fernet.cache_clear()
    assert crypto.decrypt(token) == "value"
    rotated = crypto.rotate(token)
    monkeypatch.setenv("DEVPUSH_ENCRYPTION_KEYS", new_key)
    get_settings.cache_clear()
    crypto.get_fernet.cache_clear()
    assert crypto.decrypt(rotated) == "value"
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        crypto.decrypt(token)
    monkeypatch.undo()
    get_settings.cache_clear()
    crypto.get_fernet.cache_clear()


def test_generated_key_file_is_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)  # type: ignore[call-arg]
    settings.encryption_keys = None
    keys = crypto.load_keys(settings)
    path = tmp_path / "secrets" / "fernet_keys"
    assert len(keys) == 1 and path.stat().st_mode & 0o777 == 0o600
    assert crypto.load_keys(settings) == keys
