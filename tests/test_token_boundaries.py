"""Token decoding at its edges: the service's own clock decides, and the login claim's length limit."""

from __future__ import annotations

import jwt
import pytest

from msgapi.tokens import ACCESS, MAX_FAMILY_LENGTH, InvalidToken, TokenService

KEY = "boundary-test-key-" + "k" * 32
TEN_DAYS = 10 * 86400


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_services_clock_decides_expiry_not_the_librarys():
    """A token issued and used on a clock ten days behind the system's is still good on that clock."""
    import time

    clock = Clock(time.time() - TEN_DAYS)
    service = TokenService(KEY, 300, 3600, clock=clock)
    token = service.issue(ACCESS, 7, 0)
    assert service.decode(token, ACCESS)["user_id"] == 7
    clock.now += 600  # past exp and the leeway, on the service's clock
    with pytest.raises(InvalidToken):
        service.decode(token, ACCESS)


def _with_family(service: TokenService, family: str) -> str:
    claims = jwt.decode(service.issue(ACCESS, 7, 0), options={"verify_signature": False})
    claims["fam"] = family
    return jwt.encode(claims, KEY, algorithm="HS256")


def test_a_login_claim_of_the_longest_allowed_length_is_accepted_and_one_more_is_not():
    service = TokenService(KEY, 300, 3600)
    assert service.decode(_with_family(service, "f" * MAX_FAMILY_LENGTH), ACCESS)["fam"] == "f" * MAX_FAMILY_LENGTH
    with pytest.raises(InvalidToken):
        service.decode(_with_family(service, "f" * (MAX_FAMILY_LENGTH + 1)), ACCESS)
