"""The auth rate limiter: per client address and per username, shared through the database.

Through the app (in-process and over two live servers), then the pieces alone:
``RateLimiter`` with a fake clock, ``Rate.parse`` and ``client_address``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import ipaddress
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import webtest
from conftest import PASSWORD, TEST_HASH_ITERATIONS, TEST_SECRET_KEY, assert_problem, register

from msgapi import config as config_module
from msgapi.app import create_app
from msgapi.config import Rate
from msgapi.database_url import sqlite_path
from msgapi.proxies import client_address, parse_networks
from msgapi.ratelimit import ACCOUNT_BUDGET_FACTOR, RateLimited, RateLimiter, address_key
from msgapi.store import limits, schema
from msgapi.store.connection import database
from msgapi.store.connection import release as release_connection

PROBLEM_JSON = "application/problem+json"
LIMIT = 3
ACCOUNT_LIMIT = LIMIT * ACCOUNT_BUDGET_FACTOR  # failed logins per account, whatever the address
WRONG = "wrong password!"


@pytest.fixture
def limited_app(config):
    """``limited_app(**config changes)``: an app on the test database limited to 3 auth requests a minute."""

    def make(**changes) -> webtest.TestApp:
        changes.setdefault("auth_rate_limit", Rate(LIMIT, 60))
        return webtest.TestApp(create_app(dataclasses.replace(config, **changes)))

    yield make
    database.close_all()


def assert_429(resp) -> int:
    assert_problem(resp, 429)
    retry_after = resp.headers["Retry-After"]
    assert retry_after.isdigit(), retry_after
    seconds = int(retry_after)
    assert 1 <= seconds <= 2 * 60
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    return seconds


def login(app, username: str, password: str = WRONG, xff: str | None = None, peer: str | None = None):
    headers = {"X-Forwarded-For": xff} if xff else {}
    environ = {"REMOTE_ADDR": peer} if peer else {}
    return app.post_json(
        "/api/auth/token/",
        {"username": username, "password": password},
        headers=headers,
        extra_environ=environ,
        expect_errors=True,
    )


def signup(app, username: str, peer: str | None = None, xff: str | None = None, **body):
    headers = {"X-Forwarded-For": xff} if xff else {}
    environ = {"REMOTE_ADDR": peer} if peer else {}
    return app.post_json(
        "/api/auth/register/",
        {"username": username, "password": PASSWORD, **body},
        headers=headers,
        extra_environ=environ,
        expect_errors=True,
    )


# --- through the app -----------------------------------------------------------------------------


def test_webtest_requests_are_counted_as_127_0_0_1(limited_app):
    """What the in-process tests below rely on: no REMOTE_ADDR from WebTest, so the buckets are 127.0.0.1's."""
    app = limited_app()
    signup(app, "alice")
    login(app, "alice")
    buckets = {row.bucket for row in schema.RateLimitHit.select(schema.RateLimitHit.bucket)}
    assert buckets == {"register:ip:127.0.0.1", "token:ip:127.0.0.1", RateLimiter.account_bucket("token", "alice")}


def test_register_is_limited_per_client_address(limited_app):
    app = limited_app()
    for n in range(LIMIT):
        assert signup(app, f"user{n}", peer="198.51.100.1").status_int == 201
    assert_429(signup(app, "user-over", peer="198.51.100.1"))
    # Another address has its own budget.
    assert signup(app, "user-other", peer="198.51.100.2").status_int == 201


def test_every_register_attempt_counts_even_an_invalid_one(limited_app):
    app = limited_app()
    for _ in range(LIMIT):
        assert signup(app, "bad name!").status_int == 400
    assert_429(signup(app, "goodname"))


def test_refused_register_creates_no_user(limited_app):
    app = limited_app()
    for n in range(LIMIT):
        signup(app, f"user{n}")
    assert_429(signup(app, "latecomer"))
    assert login(app, "latecomer", PASSWORD, peer="192.0.2.50").status_int == 401


def test_token_endpoint_is_limited_per_client_address(limited_app):
    app = limited_app()
    for n in range(LIMIT):
        assert login(app, f"nobody{n}", peer="198.51.100.7").status_int == 401
    assert_429(login(app, "nobody-else", peer="198.51.100.7"))
    assert login(app, "nobody-else", peer="198.51.100.8").status_int == 401


def test_token_endpoint_is_limited_per_username_across_addresses(limited_app):
    app = limited_app()
    register(app, "alice")  # the register bucket is not the token bucket
    for n in range(ACCOUNT_LIMIT):
        assert login(app, "alice", peer=f"203.0.113.{n + 1}").status_int == 401
    assert_429(login(app, "alice", peer="203.0.113.99"))
    # Even the right password: a guesser who finally hits it learns nothing.
    assert_429(login(app, "alice", PASSWORD, peer="203.0.113.100"))
    # Another user from a fresh address is unaffected.
    register(app, "bob")
    assert login(app, "bob", PASSWORD, peer="203.0.113.101").status_int == 200


def test_username_bucket_ignores_case(limited_app):
    app = limited_app()
    names = ["Alice", "ALICE", "alice"]
    for n in range(ACCOUNT_LIMIT):
        assert login(app, names[n % 3], peer=f"203.0.113.{n + 1}").status_int == 401
    assert_429(login(app, "aLiCe", peer="203.0.113.50"))


@pytest.mark.parametrize("name", ["\ufb03" * 150, "\u00df" * 150], ids=["ffi-ligature-150", "sharp-s-150"])
def test_login_with_a_name_too_long_once_case_folded_is_counted_and_401(limited_app, name):
    app = limited_app()
    for n in range(ACCOUNT_LIMIT):
        assert login(app, name, peer=f"203.0.113.{n + 1}").status_int == 401
    assert_429(login(app, name, peer="203.0.113.99"))  # its account bucket still works


def test_username_bucket_ignores_nfkc_differences(limited_app):
    app = limited_app()
    fullwidth_alice = "\uff41\uff4c\uff49\uff43\uff45"
    names = ["alice", fullwidth_alice, "ALICE"]
    for n in range(ACCOUNT_LIMIT):
        assert login(app, names[n % len(names)], peer=f"203.0.113.{n + 1}").status_int == 401
    assert_429(login(app, fullwidth_alice, peer="203.0.113.50"))


def change_password(app, access: str, current: str = WRONG, peer: str | None = None):
    return app.post_json(
        "/api/auth/password/",
        {"current_password": current, "new_password": "a brand new passphrase"},
        headers={"Authorization": f"Bearer {access}"},
        extra_environ={"REMOTE_ADDR": peer} if peer else {},
        expect_errors=True,
    )


def access_token(app, username: str, peer: str) -> str:
    """Register and log in ``username`` from ``peer`` (a successful login spends no account budget)."""
    assert signup(app, username, peer=peer).status_int == 201
    resp = login(app, username, PASSWORD, peer=peer)
    assert resp.status_int == 200, resp.text
    return resp.json["access"]


def test_password_change_guesses_are_limited_per_account_across_addresses(limited_app):
    app = limited_app()
    access = access_token(app, "alice", peer="198.51.100.30")
    for n in range(ACCOUNT_LIMIT):
        assert change_password(app, access, peer=f"203.0.113.{n + 1}").status_int == 400
    assert_429(change_password(app, access, peer="203.0.113.99"))
    # Even the right password: a guesser who finally hits it learns nothing.
    assert_429(change_password(app, access, PASSWORD, peer="203.0.113.100"))


def test_password_change_guesses_are_limited_per_client_address(limited_app):
    app = limited_app()
    alice = access_token(app, "alice", peer="198.51.100.31")
    bob = access_token(app, "bob", peer="198.51.100.32")
    for access in (alice, bob, alice):
        assert change_password(app, access, peer="192.0.2.40").status_int == 400
    assert_429(change_password(app, bob, peer="192.0.2.40"))


def test_password_change_and_login_share_the_account_budget(limited_app):
    app = limited_app()
    access = access_token(app, "alice", peer="198.51.100.33")
    for n in range(ACCOUNT_LIMIT):
        if n % 2:
            assert change_password(app, access, peer=f"203.0.113.{n + 1}").status_int == 400
        else:
            assert login(app, "alice", peer=f"203.0.113.{n + 1}").status_int == 401
    assert_429(login(app, "alice", PASSWORD, peer="198.51.100.200"))
    assert_429(change_password(app, access, PASSWORD, peer="198.51.100.201"))


def test_one_address_hammering_an_account_does_not_lock_its_owner_out(limited_app):
    app = limited_app()
    register(app, "alice")
    for _ in range(10 * LIMIT):
        login(app, "alice", peer="198.51.100.66")
    assert_429(login(app, "alice", peer="198.51.100.66"))
    assert login(app, "alice", PASSWORD, peer="203.0.113.5").status_int == 200


def test_one_ipv6_prefix_hammering_an_account_does_not_lock_its_owner_out(limited_app):
    app = limited_app()
    register(app, "alice")
    for n in range(10 * LIMIT):
        login(app, "alice", peer=f"2001:db8:66:1::{n + 1:x}")
    assert login(app, "alice", PASSWORD, peer="2001:db8:77::5").status_int == 200


def test_refused_logins_do_not_count_against_the_account(limited_app):
    """The account's failures are those that passed the address check: exactly LIMIT per address."""
    app = limited_app()
    register(app, "alice")
    for n in range(ACCOUNT_BUDGET_FACTOR - 1):
        for _ in range(5 * LIMIT):
            login(app, "alice", peer=f"198.51.100.{n + 1}")
    # Those addresses spent LIMIT failures each; one more address fits all of its budget.
    for _ in range(LIMIT):
        assert login(app, "alice", peer="198.51.100.200").status_int == 401
    # Now the account is full, from any address.
    assert_429(login(app, "alice", PASSWORD, peer="203.0.113.9"))


def test_successful_logins_do_not_spend_the_account_budget(limited_app):
    app = limited_app()
    register(app, "alice")
    for n in range(ACCOUNT_LIMIT + LIMIT):
        assert login(app, "alice", PASSWORD, peer=f"203.0.113.{n + 1}").status_int == 200
    for n in range(ACCOUNT_LIMIT):
        assert login(app, "alice", peer=f"198.51.100.{n + 1}").status_int == 401
    assert_429(login(app, "alice", PASSWORD, peer="192.0.2.1"))


def test_a_successful_login_gives_back_only_its_own_account_slot(limited_app):
    app = limited_app()
    register(app, "alice")
    assert login(app, "alice", peer="203.0.113.1").status_int == 401
    assert login(app, "alice", PASSWORD, peer="203.0.113.2").status_int == 200
    for n in range(ACCOUNT_LIMIT - 1):
        assert login(app, "alice", peer=f"198.51.100.{n + 1}").status_int == 401
    # The failure before the success still counts: the account is full.
    assert_429(login(app, "alice", PASSWORD, peer="192.0.2.1"))


def test_a_successful_login_leaves_no_account_row(limited_app):
    """The slot given back leaves its window at zero hits, which is no row: successes never grow the table."""
    app = limited_app()
    register(app, "alice")
    for n in range(3):
        assert login(app, "alice", PASSWORD, peer=f"203.0.113.{n + 1}").status_int == 200
    assert [bucket for bucket in limiter_rows() if bucket.startswith("token:user:")] == []


def test_a_refusal_for_the_account_does_not_spend_the_address_budget(limited_app):
    app = limited_app()
    for n in range(ACCOUNT_LIMIT):
        login(app, "alice", peer=f"203.0.113.{n + 1}")
    for _ in range(5 * LIMIT):
        assert_429(login(app, "alice", peer="198.51.100.1"))
    for n in range(LIMIT):
        assert login(app, f"other{n}", peer="198.51.100.1").status_int == 401


def test_many_addresses_against_one_account_are_still_slowed(limited_app):
    app = limited_app()
    register(app, "alice")
    statuses = [login(app, "alice", peer=f"10.{n // 250}.{n % 250}.1").status_int for n in range(4 * ACCOUNT_LIMIT)]
    assert statuses.count(401) == ACCOUNT_LIMIT
    assert statuses.count(429) == 3 * ACCOUNT_LIMIT


def test_forwarded_for_is_ignored_from_an_untrusted_peer(limited_app):
    app = limited_app()  # no trusted proxies
    for n in range(LIMIT):
        assert login(app, f"nobody{n}", xff=f"192.0.2.{n + 1}").status_int == 401
    assert_429(login(app, "nobody-else", xff="192.0.2.200"))


def test_register_ignores_forwarded_for_from_an_untrusted_peer(limited_app):
    app = limited_app()
    for n in range(LIMIT):
        assert signup(app, f"user{n}", xff=f"192.0.2.{n + 1}").status_int == 201
    assert_429(signup(app, "user-over", xff="192.0.2.200"))


def test_forwarded_addresses_from_a_trusted_proxy_get_their_own_buckets(limited_app):
    app = limited_app(trusted_proxies=parse_networks("127.0.0.1"))
    for n in range(2 * LIMIT + 1):
        resp = login(app, f"nobody{n}", xff=f"192.0.2.{n + 1}", peer="127.0.0.1")
        assert resp.status_int == 401, resp.text
    for n in range(2 * LIMIT + 1):
        assert signup(app, f"user{n}", xff=f"192.0.2.{n + 1}", peer="127.0.0.1").status_int == 201


def test_one_forwarded_address_behind_a_trusted_proxy_is_still_limited(limited_app):
    app = limited_app(trusted_proxies=parse_networks("127.0.0.1"))
    for n in range(LIMIT):
        assert login(app, f"nobody{n}", xff="192.0.2.9").status_int == 401
    assert_429(login(app, "nobody-else", xff="192.0.2.9"))
    # A client cannot escape by writing its own X-Forwarded-For: the proxy appends the real one.
    assert_429(login(app, "nobody-else", xff="10.9.9.9, 192.0.2.9"))


def test_same_username_behind_a_trusted_proxy_hits_its_per_username_limit(limited_app):
    app = limited_app(trusted_proxies=parse_networks("127.0.0.1"))
    register(app, "alice")
    for n in range(ACCOUNT_LIMIT):
        assert login(app, "alice", xff=f"192.0.2.{n + 1}").status_int == 401
    assert_429(login(app, "alice", xff="192.0.2.77"))
    # The address bucket of that last client is not full: another name from there passes.
    assert login(app, "someone-else", xff="192.0.2.77").status_int == 401


def test_429_carries_cors_exposure_of_retry_after(limited_app):
    app = limited_app()
    for n in range(LIMIT):
        login(app, f"nobody{n}")
    resp = app.post_json(
        "/api/auth/token/",
        {"username": "x", "password": "y"},
        headers={"Origin": "https://example.com"},
        expect_errors=True,
    )
    assert_429(resp)
    assert "retry-after" in resp.headers.get("Access-Control-Expose-Headers", "").lower()


def test_other_endpoints_are_not_limited(limited_app):
    app = limited_app()
    for n in range(LIMIT):
        login(app, f"nobody{n}")
    assert_429(login(app, "nobody"))
    for _ in range(3 * LIMIT):
        assert app.get("/api/messages").status_int == 200


def test_limit_off_disables_the_limiter(limited_app):
    app = limited_app(auth_rate_limit=Rate.parse("off"))
    for n in range(4 * LIMIT):
        assert signup(app, f"user{n}").status_int == 201
    for _ in range(4 * LIMIT):
        assert login(app, "user0").status_int == 401
    assert login(app, "user0", PASSWORD).status_int == 200


@pytest.mark.parametrize("value", ["off", "OFF", "none", "0", " off "])
def test_auth_rate_limit_off_from_the_environment(database_url, value):
    settings = config_module.from_env(
        {
            "DATABASE_URL": database_url,
            "SECRET_KEY": TEST_SECRET_KEY,
            "PASSWORD_HASH_ITERATIONS": str(TEST_HASH_ITERATIONS),
            "AUTH_RATE_LIMIT": value,
        }
    )
    assert settings.auth_rate_limit is None
    app = webtest.TestApp(create_app(settings))
    try:
        for n in range(15):
            assert signup(app, f"user{n}").status_int == 201
    finally:
        database.close_all()


def test_default_limit_from_the_environment_is_10_a_minute(database_url):
    settings = config_module.from_env(
        {"DATABASE_URL": database_url, "SECRET_KEY": TEST_SECRET_KEY, "PASSWORD_HASH_ITERATIONS": "1000"}
    )
    assert settings.auth_rate_limit == Rate(10, 60)
    app = webtest.TestApp(create_app(settings))
    try:
        for n in range(10):
            assert signup(app, f"user{n}").status_int == 201
        assert_429(signup(app, "user10"))
    finally:
        database.close_all()


# --- bounded storage --------------------------------------------------------------------------------


def limiter_rows() -> list[str]:
    try:
        return [row.bucket for row in schema.RateLimitHit.select(schema.RateLimitHit.bucket)]
    finally:
        database.close()


def limiter_counts() -> set[tuple[str, int, int]]:
    try:
        return {(row.bucket, row.window_start, row.hits) for row in schema.RateLimitHit.select()}
    finally:
        database.close()


def test_refused_logins_write_no_rows(limited_app):
    app = limited_app()
    for n in range(LIMIT):
        assert login(app, f"nobody{n}", peer="198.51.100.7").status_int == 401
    counts = limiter_counts()
    assert len(counts) == 1 + LIMIT  # the address, and each name's one failure
    for n in range(60):
        assert_429(login(app, f"new-name-{n}", peer="198.51.100.7"))
    assert limiter_counts() == counts


def test_a_refused_login_counts_nowhere_even_for_a_moment(limited_app, monkeypatch):
    # A count taken back afterwards would still stand while the request runs: an address
    # hammering an account would keep filling the account's budget, and its owner could be
    # refused by counts that are about to vanish. Every budget is read before any is counted.
    app = limited_app()
    for n in range(LIMIT):
        login(app, "alice", f"wrong{n}", peer="198.51.100.7")
    counted = []
    count_hit = limits.count_hit
    monkeypatch.setattr(limits, "count_hit", lambda bucket, window: counted.append(bucket) or count_hit(bucket, window))
    for n in range(10):
        assert_429(login(app, "alice", f"wrong{n}", peer="198.51.100.7"))
        assert_429(login(app, f"new-name-{n}", peer="198.51.100.7"))
    assert counted == []


def test_refused_registrations_write_no_rows(limited_app):
    app = limited_app()
    for n in range(LIMIT):
        signup(app, f"user{n}", peer="198.51.100.7")
    counts = limiter_counts()
    for n in range(30):
        assert_429(signup(app, f"late{n}", peer="198.51.100.7"))
    assert limiter_counts() == counts


def test_bucket_keys_have_one_size_whatever_the_name(limited_app):
    app = limited_app()
    names = ["a", "b" * 150, "\ufb03" * 150, "ß" * 150]
    for n, name in enumerate(names):
        login(app, name, peer=f"198.51.100.{n + 1}")
    account_keys = [bucket for bucket in limiter_rows() if ":user:" in bucket]
    assert len(account_keys) == len(names)
    assert {len(key) for key in account_keys} == {len("token:user:") + 32}
    assert all(key.startswith("token:user:") for key in account_keys)


def test_expired_windows_are_pruned(limiter):
    rl, clock = limiter()
    for n in range(20):
        rl.hit(f"old{n}")
    assert len(limiter_rows()) == 20
    clock.now = WINDOW + 60
    rl.hit("recent")  # the previous window is still needed
    assert len(limiter_rows()) == 21
    clock.now = WINDOW + 120
    rl.hit("new")
    assert sorted(limiter_rows()) == ["new", "recent"]


# --- IPv6 prefixes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "prefix", "key"),
    [
        ("198.51.100.7", 64, "198.51.100.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64, "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::1", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", 48, "2001:db8:1::/48"),
        ("2001:db8:1:2::1", 128, "2001:db8:1:2::1/128"),
        ("::ffff:198.51.100.7", 64, "198.51.100.7"),
        ("fe80::1:2%eth0", 64, "fe80::/64"),
    ],
)
def test_address_key(address, prefix, key):
    assert address_key(address, prefix) == key


def test_address_key_of_something_else_has_a_fixed_size():
    assert len(address_key("x" * 5000)) == len(address_key("unix-socket")) == 32


def test_ipv6_addresses_of_one_prefix_share_one_budget(limited_app):
    app = limited_app()
    statuses = [signup(app, f"user{n}", peer=f"2001:db8:5:6::{n + 1:x}").status_int for n in range(30)]
    assert statuses == [201] * LIMIT + [429] * (30 - LIMIT)
    # The next /64 is another client.
    assert signup(app, "neighbour", peer="2001:db8:5:7::1").status_int == 201


def test_ipv6_prefix_applies_to_forwarded_addresses(limited_app):
    app = limited_app(trusted_proxies=parse_networks("127.0.0.1"))
    statuses = [
        signup(app, f"user{n}", xff=f"2001:db8:5:6:{n + 1:x}::1", peer="127.0.0.1").status_int for n in range(30)
    ]
    assert statuses == [201] * LIMIT + [429] * (30 - LIMIT)


def test_ipv6_prefix_is_a_setting(limited_app):
    app = limited_app(rate_limit_ipv6_prefix=128)
    for n in range(2 * LIMIT):
        assert signup(app, f"user{n}", peer=f"2001:db8:5:6::{n + 1:x}").status_int == 201


def test_ipv6_prefix_from_the_environment():
    base = {"DATABASE_URL": "sqlite:///x.sqlite3", "SECRET_KEY": TEST_SECRET_KEY}
    assert config_module.from_env(base).rate_limit_ipv6_prefix == 64
    assert config_module.from_env({**base, "RATE_LIMIT_IPV6_PREFIX": "56"}).rate_limit_ipv6_prefix == 56
    for bad in ("0", "129", "/64", "x"):
        with pytest.raises(config_module.ConfigError, match="RATE_LIMIT_IPV6_PREFIX"):
            config_module.from_env({**base, "RATE_LIMIT_IPV6_PREFIX": bad})


# --- two live servers share one limit ------------------------------------------------------------


def _post(url: str, path: str, body: dict, headers: dict[str, str] | None = None):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        headers = {"Content-Type": "application/json", **(headers or {})}
        conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def test_the_limit_holds_across_two_server_processes(live_server):
    env = {"AUTH_RATE_LIMIT": f"{LIMIT}/minute"}
    first, second = live_server(env), live_server(env)
    statuses = [
        _post(server.url, "/api/auth/register/", {"username": f"user{n}", "password": PASSWORD})[0]
        for n, server in enumerate([first, second, first])
    ]
    assert statuses == [201] * LIMIT
    for server in (second, first):
        status, headers, body = _post(server.url, "/api/auth/register/", {"username": "over", "password": PASSWORD})
        assert status == 429, body
        assert headers["Content-Type"] == PROBLEM_JSON
        assert int(headers["Retry-After"]) >= 1


def test_the_username_limit_holds_across_two_server_processes(live_server):
    env = {"AUTH_RATE_LIMIT": f"{LIMIT}/minute", "TRUSTED_PROXIES": "127.0.0.1"}
    first, second = live_server(env), live_server(env)
    # Alternate servers, each attempt from its own forwarded address: only the account fills.
    statuses = [
        _post(
            (first, second)[n % 2].url,
            "/api/auth/token/",
            {"username": "alice", "password": WRONG},
            {"X-Forwarded-For": f"192.0.2.{n + 1}"},
        )[0]
        for n in range(ACCOUNT_LIMIT)
    ]
    assert statuses == [401] * ACCOUNT_LIMIT
    headers = {"X-Forwarded-For": "192.0.2.200"}
    assert _post(first.url, "/api/auth/token/", {"username": "alice", "password": WRONG}, headers)[0] == 429


# --- RateLimiter with a fake clock ---------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


WINDOW = 1_800_000_000 - 1_800_000_000 % 60  # the start of a one-minute window


@pytest.fixture
def limiter(wsgi_app):
    """``limiter(limit)`` -> (RateLimiter on the test database, its FakeClock at WINDOW)."""

    def make(limit: int = LIMIT, period: int = 60):
        clock = FakeClock(WINDOW)
        return RateLimiter(limits, Rate(limit, period), clock=clock), clock

    yield make
    database.close()


def allowed(rate_limiter: RateLimiter, bucket: str) -> bool:
    try:
        rate_limiter.hit(bucket)
    except RateLimited:
        return False
    return True


def test_limiter_allows_the_limit_then_refuses(limiter):
    rl, _ = limiter()
    assert [allowed(rl, "b") for _ in range(LIMIT)] == [True] * LIMIT
    with pytest.raises(RateLimited) as refused:
        rl.hit("b")
    assert isinstance(refused.value.retry_after, int) and refused.value.retry_after >= 1


def test_limiter_buckets_are_independent(limiter):
    rl, _ = limiter()
    for _ in range(LIMIT):
        rl.hit("a")
    assert not allowed(rl, "a")
    assert allowed(rl, "b")


def test_limiter_raises_if_any_bucket_is_over(limiter):
    rl, _ = limiter()
    for _ in range(LIMIT):
        rl.hit("full")
    with pytest.raises(RateLimited):
        rl.hit("fresh", "full")
    # A refused request counts nowhere: the fresh bucket still has its whole budget.
    assert [allowed(rl, "fresh") for _ in range(LIMIT + 1)] == [True] * LIMIT + [False]


def test_limiter_is_not_doubled_at_the_window_boundary(limiter):
    """A fixed window would let 3 through at :59.5 and 3 more at :00.5; the sliding window refuses them."""
    rl, clock = limiter()
    clock.now = WINDOW + 59.5
    assert [allowed(rl, "b") for _ in range(LIMIT)] == [True] * LIMIT
    clock.now = WINDOW + 60.5
    assert not allowed(rl, "b")


def test_limiter_boundary_burst_in_every_bucket(limiter):
    rl, clock = limiter(limit=10)
    clock.now = WINDOW + 59.9
    assert sum(allowed(rl, "b") for _ in range(10)) == 10
    clock.now = WINDOW + 60.1
    assert sum(allowed(rl, "b") for _ in range(10)) == 0


def test_limiter_counts_the_previous_window_weighted(limiter):
    rl, clock = limiter()
    for bucket in ("early", "late"):
        for _ in range(LIMIT):
            rl.hit(bucket)  # at WINDOW + 0
    # 15 s into the next window three quarters of the previous one still overlap:
    # 1 + 3 * 0.75 > 3, refused at once (a fixed window would allow 3 more).
    clock.now = WINDOW + 60 + 15
    assert not allowed(rl, "early")
    # 45 s in, a quarter overlaps: 3 * 0.25 = 0.75, so 2 more fit (1.75, 2.75) and a third (3.75) does not.
    clock.now = WINDOW + 60 + 45
    assert [allowed(rl, "late") for _ in range(3)] == [True, True, False]


def test_limiter_forgets_after_two_windows(limiter):
    rl, clock = limiter()
    for _ in range(LIMIT + 2):
        allowed(rl, "b")
    clock.now = WINDOW + 120 + 1
    assert [allowed(rl, "b") for _ in range(LIMIT)] == [True] * LIMIT


def test_waiting_retry_after_is_enough(limiter):
    rl, clock = limiter()
    clock.now = WINDOW + 5
    for _ in range(LIMIT):
        rl.hit("b")
    with pytest.raises(RateLimited) as refused:
        rl.hit("b")
    retry_after = refused.value.retry_after
    assert retry_after <= 2 * 60
    clock.now = WINDOW + 5 + retry_after
    assert allowed(rl, "b")


@pytest.mark.parametrize("offset", [0, 1, 30, 59, 59.99])
def test_retry_after_is_enough_wherever_in_the_window_it_is_refused(limiter, offset):
    rl, clock = limiter()
    clock.now = WINDOW + offset
    for _ in range(LIMIT):
        rl.hit(f"b{offset}")
    with pytest.raises(RateLimited) as refused:
        rl.hit(f"b{offset}")
    clock.now += refused.value.retry_after
    assert allowed(rl, f"b{offset}")


def test_retry_after_is_enough_when_refused_for_the_previous_windows_hits(limiter):
    rl, clock = limiter()
    clock.now = WINDOW + 59
    for _ in range(LIMIT):
        rl.hit("b")
    clock.now = WINDOW + 61
    with pytest.raises(RateLimited) as refused:
        rl.hit("b")
    clock.now += refused.value.retry_after
    assert allowed(rl, "b")


def test_limiter_never_allows_twice_the_limit_in_any_period(limiter):
    """The sliding-window counter is an estimate; its worst case (a burst at the end of a
    window, then requests paced to the decaying estimate) stays below twice the limit."""
    rl, clock = limiter(limit=10)
    times = []
    clock.now = WINDOW + 59.9
    for _ in range(10):
        if allowed(rl, "b"):
            times.append(clock.now)
    for k in range(1, 10):
        clock.now = WINDOW + 60 + 6 * k + 0.1
        if allowed(rl, "b"):
            times.append(clock.now)
    most_in_a_period = max(sum(1 for t in times if start <= t < start + 60) for start in times)
    assert most_in_a_period < 2 * 10


def test_concurrent_requests_get_exactly_the_limit_and_refusals_leave_no_count(limiter):
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier


    rl, _ = limiter(limit=5)
    start = Barrier(16)

    def one(_: int) -> bool:
        start.wait()
        try:
            return allowed(rl, "contended")
        finally:
            release_connection()

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    assert results.count(True) == 5
    assert limiter_counts() == {("contended", WINDOW, 5)}


class Untouchable:
    """Counters that fail the test if anything counts, reads or prunes."""

    def __getattr__(self, name: str):
        raise AssertionError(f"the disabled limiter used the store: {name}")


@contextlib.contextmanager
def rate_limit_table_write_locked(database_url: str) -> Iterator[None]:
    """Another connection holds the write lock on the limiter's table; reads still go through."""
    if database_url.startswith("sqlite"):
        holder = sqlite3.connect(sqlite_path(database_url), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # in WAL mode, readers are not blocked
        release = holder.rollback
    else:
        import psycopg2

        holder = psycopg2.connect(database_url)
        holder.cursor().execute("LOCK TABLE rate_limit_hits IN EXCLUSIVE MODE")  # blocks writes only
        release = holder.rollback
    try:
        yield
    finally:
        release()
        holder.close()


def hit_in_thread(rate_limiter: RateLimiter, bucket: str) -> tuple[threading.Thread, list]:
    """Start ``rate_limiter.hit(bucket)`` in a thread; the list gets True, False (refused) or the exception."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(allowed(rate_limiter, bucket))
        except Exception as exc:  # the test's assertion shows it
            outcome.append(exc)
        finally:
            release_connection()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def fill_previous_window(rate_limiter: RateLimiter, clock: FakeClock, bucket: str, hits: int) -> None:
    clock.now = WINDOW
    for _ in range(hits):
        rate_limiter.hit(bucket)
    clock.now = WINDOW + 60 + 30  # half of the previous window still overlaps


def test_a_refused_request_is_answered_on_a_read_and_writes_nothing(limiter, database_url):
    """So a flood of refused requests never queues for the write lock: with the table
    write-locked by another connection, a refusal still comes at once."""
    rl, clock = limiter()
    fill_previous_window(rl, clock, "b", 2)  # weighs 1 now
    rl.hit("b")
    rl.hit("b")  # 2 + 1 + 1 (weighted) > 3: the next is refused
    with rate_limit_table_write_locked(database_url):
        thread, outcome = hit_in_thread(rl, "b")
        thread.join(timeout=20)  # a read takes milliseconds; a write waits for the lock
        waited_to_write = thread.is_alive()
    thread.join()
    assert not waited_to_write, "a refused request waited for the write lock"
    assert outcome == [False]


def test_requests_that_passed_the_read_together_get_only_the_room_left(limiter, database_url):
    """The race the read check alone would lose: three requests read the bucket before
    any of them counts. Counting rechecks, and the one over the limit takes its hit back."""
    rl, clock = limiter()
    fill_previous_window(rl, clock, "b", 2)  # weighs 1 now: room for 2 more
    with rate_limit_table_write_locked(database_url):
        racers = [hit_in_thread(rl, "b") for _ in range(3)]
        time.sleep(1)  # each reads the bucket, then waits to count
    for thread, _ in racers:
        thread.join(timeout=30)
    outcomes = [outcome for _, result in racers for outcome in result]
    assert outcomes.count(True) == 2 and outcomes.count(False) == 1, outcomes
    assert not allowed(rl, "b")  # the loser's hit was taken back, the winners' stay
    assert limiter_counts() == {("b", WINDOW, 2), ("b", WINDOW + 60, 2)}


def test_retry_after_counts_the_refused_request_in_this_window(limiter):
    """Refused 5 s into a window holding 3 of 3: 55 s to the window's end, then until
    the 4 (the refused one counted, to be safe), weighted by their overlap, leave room
    for one: 1 + 4 * (1 - t / 60) <= 3 from t = 30 s. So 85 s, not more."""
    rl, clock = limiter()
    clock.now = WINDOW + 5
    for _ in range(LIMIT):
        rl.hit("b")
    with pytest.raises(RateLimited) as refused:
        rl.hit("b")
    assert refused.value.retry_after == 55 + 30


def test_retry_after_of_a_per_second_limit_is_one_second(limiter):
    """0.1 s to the second's end, then 1 - 1/3 s until the 3 weighted leave room: 1 s rounded up."""
    rl, clock = limiter(limit=2, period=1)
    clock.now = WINDOW + 0.9
    rl.hit("b")
    rl.hit("b")
    with pytest.raises(RateLimited) as refused:
        rl.hit("b")
    assert refused.value.retry_after == 1


def test_enabled_limiter_says_so():
    assert RateLimiter(Untouchable(), Rate(LIMIT, 60)).enabled is True


def test_ipv6_clients_are_budgeted_by_their_64_prefix_by_default():
    rl = RateLimiter(Untouchable(), Rate(LIMIT, 60))
    assert rl.address_bucket("token", "2001:db8:1:2::1") == "token:ip:2001:db8:1:2::/64"


def test_disabled_limiter_touches_nothing():
    rl = RateLimiter(Untouchable(), None)
    assert not rl.enabled
    for _ in range(100):
        rl.hit("anything")
        rl.login_attempt("token", "10.0.0.1", "alice").succeeded()


# --- Rate.parse ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("10/minute", Rate(10, 60)),
        ("10/minutes", Rate(10, 60)),
        ("10/Minute", Rate(10, 60)),
        (" 10 / minute ", Rate(10, 60)),
        ("5/second", Rate(5, 1)),
        ("5/seconds", Rate(5, 1)),
        ("100/hour", Rate(100, 3600)),
        ("1000/day", Rate(1000, 86400)),
        ("1/days", Rate(1, 86400)),
        ("7", Rate(7, 60)),
    ],
)
def test_rate_parse(text, rate):
    assert Rate.parse(text) == rate


@pytest.mark.parametrize("text", ["off", "OFF", "none", "None", "0", "  off  "])
def test_rate_parse_off(text):
    assert Rate.parse(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "10/fortnight",
        "10/week",
        "-1/minute",
        "0/minute",
        "1.5/minute",
        "/minute",
        "+5/minute",
        "ten/minute",
        "10/minute/extra",
        "10 per minute",
        "²/minute",
        "10/min",
    ],
)
def test_rate_parse_refuses_malformed_values(text):
    with pytest.raises(ValueError):
        Rate.parse(text)


@pytest.mark.parametrize("text", ["10/s", "10/ss"])
def test_rate_parse_does_not_read_a_bare_s_as_minutes(text):
    """The units are second, minute, hour, day; "10/s" must be refused (or mean seconds), not 10/minute."""
    try:
        rate = Rate.parse(text)
    except ValueError:
        return
    assert rate == Rate(10, 1)


def test_malformed_auth_rate_limit_is_a_config_error():
    with pytest.raises(config_module.ConfigError, match="AUTH_RATE_LIMIT"):
        config_module.from_env(
            {"DATABASE_URL": "sqlite:///x.sqlite3", "SECRET_KEY": TEST_SECRET_KEY, "AUTH_RATE_LIMIT": "10/fortnight"}
        )


# --- client_address --------------------------------------------------------------------------------

TRUSTED = parse_networks("10.0.0.0/8, 127.0.0.1, fd00::/8")


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        pytest.param("198.51.100.1", "1.2.3.4", TRUSTED, "198.51.100.1", id="untrusted-peer-xff-ignored"),
        pytest.param("198.51.100.1", "1.2.3.4", (), "198.51.100.1", id="nothing-trusted"),
        pytest.param("10.0.0.1", None, TRUSTED, "10.0.0.1", id="trusted-peer-no-xff"),
        pytest.param("10.0.0.1", "", TRUSTED, "10.0.0.1", id="trusted-peer-empty-xff"),
        pytest.param("10.0.0.1", " , ,", TRUSTED, "10.0.0.1", id="trusted-peer-only-commas"),
        pytest.param("10.0.0.1", "1.2.3.4", TRUSTED, "1.2.3.4", id="trusted-peer-one-hop"),
        pytest.param("10.0.0.1", "6.6.6.6, 1.2.3.4", TRUSTED, "1.2.3.4", id="spoofed-left-hop-ignored"),
        pytest.param("10.0.0.1", "6.6.6.6, 1.2.3.4, 10.0.0.2", TRUSTED, "1.2.3.4", id="rightmost-untrusted-hop"),
        pytest.param("10.0.0.1", "1.2.3.4,10.0.0.3 ,  10.0.0.2", TRUSTED, "1.2.3.4", id="whitespace-in-list"),
        pytest.param("10.0.0.1", "10.0.0.3, 10.0.0.2", TRUSTED, "10.0.0.3", id="all-hops-trusted-leftmost"),
        pytest.param("10.0.0.1", "1.2.3.4, garbage", TRUSTED, "10.0.0.1", id="garbage-rightmost-hop"),
        pytest.param("10.0.0.1", "garbage, 1.2.3.4", TRUSTED, "1.2.3.4", id="garbage-left-of-client"),
        pytest.param("10.0.0.1", "1.2.3.4:5678", TRUSTED, "10.0.0.1", id="hop-with-port"),
        pytest.param("10.0.0.1", "unknown", TRUSTED, "10.0.0.1", id="hop-unknown"),
        pytest.param("10.0.0.1", "1.2.3.4\x00", TRUSTED, "10.0.0.1", id="hop-with-nul"),
        pytest.param("10.0.0.1", "999.1.1.1", TRUSTED, "10.0.0.1", id="hop-out-of-range"),
        pytest.param("10.0.0.1", "2001:DB8::1", TRUSTED, "2001:db8::1", id="ipv6-normalised"),
        pytest.param("fd00::1", "2001:db8::7", TRUSTED, "2001:db8::7", id="ipv6-trusted-peer"),
        pytest.param("unix-socket", "1.2.3.4", TRUSTED, "unix-socket", id="peer-not-an-ip"),
    ],
)
def test_client_address(peer, forwarded, trusted, expected):
    assert client_address(peer, forwarded, trusted) == expected


def test_client_address_never_returns_a_trusted_proxy_given_an_untrusted_hop():
    result = client_address("127.0.0.1", "203.0.113.5, 10.1.2.3, 10.4.5.6", TRUSTED)
    assert result == "203.0.113.5"
    assert not any(ipaddress.ip_address(result) in network for network in TRUSTED)


def test_parse_networks():
    assert parse_networks("") == ()
    assert parse_networks(" 127.0.0.1 , 10.0.0.0/8 ,") == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
    )
    assert parse_networks("10.1.2.3/8") == (ipaddress.ip_network("10.0.0.0/8"),)
    with pytest.raises(ValueError):
        parse_networks("not-a-network")
