"""Settings: read once from the environment; bad values stop start-up naming the setting."""

from __future__ import annotations

import os
import stat

import pytest

from msgapi.config import Config, ConfigError, Rate, from_env

KEY = "k" * 40


def test_defaults_are_the_documented_ones():
    config = from_env({"SECRET_KEY": KEY})
    assert config.database_url == "sqlite:///msgapi.sqlite3"
    assert (config.access_token_lifetime, config.refresh_token_lifetime) == (7200, 86400)
    assert config.password_hash_iterations == 600_000
    assert config.cors_allow_origins == ("*",)
    assert config.auth_rate_limit == Rate(10, 60)
    assert config.write_rate_limit == Rate(30, 60)
    assert config.rate_limit_ipv6_prefix == 64
    assert (config.connection_limit, config.channel_timeout) == (500, 30)
    assert config.list_page_size == 100
    assert config.list_time_limit_ms == 500
    assert config.rotate_refresh_tokens is False and config.metrics is False
    assert config.startup_warnings == ()


def test_a_generated_key_is_stored_beside_the_sqlite_file_once_owner_only(tmp_path):
    environ = {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    first = from_env(environ)
    key_file = tmp_path / "db.sqlite3.secret_key"
    assert key_file.exists() and len(first.secret_key) >= 32
    assert from_env(environ).secret_key == first.secret_key
    assert any("SECRET_KEY is not set" in warning for warning in first.startup_warnings)
    if os.name == "posix":
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_postgresql_requires_a_secret_key():
    with pytest.raises(ConfigError, match="SECRET_KEY is required"):
        from_env({"DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test"})


def test_a_low_iteration_count_is_accepted_with_a_warning():
    config = from_env({"SECRET_KEY": KEY, "PASSWORD_HASH_ITERATIONS": "1000"})
    assert config.password_hash_iterations == 1000
    assert any("PASSWORD_HASH_ITERATIONS=1000" in warning for warning in config.startup_warnings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SECRET_KEY", "short"),
        ("DATABASE_URL", "mysql://x/y"),
        ("DATABASE_URL", "sqlite:///:memory:"),
        ("ACCESS_TOKEN_LIFETIME", "soon"),
        ("REFRESH_TOKEN_LIFETIME", "-5"),
        ("PASSWORD_HASH_ITERATIONS", "0"),
        ("CORS_ALLOW_ORIGINS", "example.com"),
        ("CORS_ALLOW_ORIGINS", "*, https://a.example"),
        ("THREADS", "many"),
        ("PORT", "http"),
        ("PORT", "70000"),
        ("AUTH_RATE_LIMIT", "lots"),
        ("WRITE_RATE_LIMIT", "lots"),
        ("RATE_LIMIT_IPV6_PREFIX", "129"),
        ("CONNECTION_LIMIT", "0"),
        ("CHANNEL_TIMEOUT", "soon"),
        ("TRUSTED_PROXIES", "not-an-address"),
        ("LIST_PAGE_SIZE", "1001"),
        ("LIST_TIME_LIMIT_MS", "0"),
        ("ROTATE_REFRESH_TOKENS", "maybe"),
        ("METRICS", "2"),
        ("LOG_FORMAT", "xml"),
    ],
)
def test_a_malformed_setting_is_an_error_naming_it_in_one_line(name, value):
    environ = {"SECRET_KEY": KEY, name: value}
    with pytest.raises(ConfigError) as caught:
        from_env(environ)
    message = str(caught.value)
    assert name in message and "\n" not in message


def test_cors_can_be_narrowed_or_switched_off():
    narrowed = from_env({"SECRET_KEY": KEY, "CORS_ALLOW_ORIGINS": "https://a.example, https://b.example/"})
    assert narrowed.cors_allow_origins == ("https://a.example", "https://b.example")
    assert from_env({"SECRET_KEY": KEY, "CORS_ALLOW_ORIGINS": ""}).cors_allow_origins is None


def test_the_hashing_cap_stays_below_the_thread_count():
    assert Config(threads=2).effective_hash_concurrency() == 1
    assert Config(threads=16).effective_hash_concurrency() < 16
    assert Config(threads=16, hash_concurrency=3).effective_hash_concurrency() == 3


def test_an_sqlite_without_returning_or_json_is_refused_at_start(monkeypatch, tmp_path):
    from msgapi.store import connection as db

    monkeypatch.setattr(db.sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(db.sqlite3, "sqlite_version", "3.31.1")
    config = Config(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", secret_key=KEY)
    with pytest.raises(ConfigError, match=r"SQLite 3\.31\.1 is too old"):
        db.open_database(config)


def test_the_list_time_limit_is_a_setting():
    assert from_env({"SECRET_KEY": KEY, "LIST_TIME_LIMIT_MS": "250"}).list_time_limit_ms == 250
