"""The auth rate limiter: per client address and per username, shared through the database.

Through the app (in-process and over two live servers), then the pieces alone:
``RateLimiter`` with a fake clock, ``Rate.parse`` and ``client_address``.
"""

from __future__ import annotations

import dataclasses
import http.client
import ipaddress
import json
from urllib.parse import urlsplit

import pytest
import webtest
from conftest import PASSWORD, TEST_HASH_ITERATIONS, TEST_SECRET_KEY, register

from msgapi import config as config_module
from msgapi import models
from msgapi.app import create_app
from msgapi.config import Rate
from msgapi.db import database
from msgapi.proxies import client_address, parse_networks
from msgapi.ratelimit import RateLimited, RateLimiter

PROBLEM_JSON = "application/problem+json"
LIMIT = 3
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
    assert resp.status_int == 429, resp.text[:300]
    assert resp.content_type == PROBLEM_JSON
    body = resp.json
    assert body["status"] == 429 and body["title"] and body["detail"]
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
    buckets = {row.bucket for row in models.RateLimitHit.select(models.RateLimitHit.bucket)}
    assert buckets == {"register:ip:127.0.0.1", "token:ip:127.0.0.1", "token:user:alice"}


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
    for n in range(LIMIT):
        assert login(app, "alice", peer=f"203.0.113.{n + 1}").status_int == 401
    assert_429(login(app, "alice", peer="203.0.113.99"))
    # Even the right password: a guesser who finally hits it learns nothing.
    assert_429(login(app, "alice", PASSWORD, peer="203.0.113.100"))
    # Another user from a fresh address is unaffected.
    register(app, "bob")
    assert login(app, "bob", PASSWORD, peer="203.0.113.101").status_int == 200


def test_username_bucket_ignores_case(limited_app):
    app = limited_app()
    for n, name in enumerate(["Alice", "ALICE", "alice"]):
        assert login(app, name, peer=f"203.0.113.{n + 1}").status_int == 401
    assert_429(login(app, "aLiCe", peer="203.0.113.50"))


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
    for n in range(LIMIT):
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


# --- two live servers share one limit ------------------------------------------------------------


def _post(url: str, path: str, body: dict):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
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
    env = {"AUTH_RATE_LIMIT": f"{LIMIT}/minute"}
    first, second = live_server(env), live_server(env)
    # Alternate servers; all from 127.0.0.1, so address and username buckets both fill.
    statuses = [
        _post(server.url, "/api/auth/token/", {"username": "alice", "password": WRONG})[0]
        for server in [first, second, second]
    ]
    assert statuses == [401] * LIMIT
    assert _post(first.url, "/api/auth/token/", {"username": "alice", "password": WRONG})[0] == 429


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
        return RateLimiter(Rate(limit, period), clock=clock), clock

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
    # The fresh bucket counted that request too.
    assert [allowed(rl, "fresh") for _ in range(LIMIT)] == [True] * (LIMIT - 1) + [False]


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


def test_disabled_limiter_touches_nothing():
    rl = RateLimiter(None)
    assert not rl.enabled
    for _ in range(100):
        rl.hit("anything")  # no database is even open here


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
