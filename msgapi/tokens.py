"""Issue and decode the JWTs, with the claims simplejwt used.

Claims: ``token_type`` (``access`` or ``refresh``), ``exp``, ``iat``, ``jti``,
``user_id`` as simplejwt, plus ``ver`` (the user's token version: bumping it ends
every token issued before) and ``fam`` (the login the token descends from, on
access and refresh tokens alike, so a reused rotated token revokes everything
that login issued). HS256
only; decoding pins the algorithm and requires every claim, so ``alg: none``,
other algorithms and tokens missing a claim are refused.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt

ALGORITHM = "HS256"
ACCESS = "access"
REFRESH = "refresh"
REQUIRED_CLAIMS = ["token_type", "exp", "iat", "jti", "user_id", "ver", "fam"]
# Clock skew tolerated between processes or machines that share the key.
LEEWAY_SECONDS = 30
# Families are 32 hex characters; the revocation tables hold up to 64.
MAX_FAMILY_LENGTH = 64


class InvalidToken(Exception):
    """The token is malformed, forged, expired, or of the wrong type."""


class WrongTokenType(InvalidToken):
    """A valid token of the other type (an access token where a refresh token belongs)."""


def _system_clock() -> float:
    # Looked up on every call, not bound once: the clock is this module's ``time``.
    return time.time()


class TokenService:
    def __init__(
        self,
        secret_key: str,
        access_lifetime: int,
        refresh_lifetime: int,
        clock: Callable[[], float] = _system_clock,
    ) -> None:
        self._key = secret_key
        self._lifetimes = {ACCESS: access_lifetime, REFRESH: refresh_lifetime}
        self._clock = clock
        # Verifying a token's signature is most of an authenticated request's own work, and
        # clients reuse an access token for hours. Failures are not cached (exceptions never are).
        self._verified = functools.lru_cache(maxsize=4096)(self._verify_uncached)

    def now(self) -> int:
        return int(self._clock())

    def revocation_expiry(self, claims: dict[str, Any]) -> int:
        """Until when a revocation of this token must be kept (Unix time).

        The token is accepted until ``exp`` plus the leeway; the process that prunes
        revocations may run up to the leeway ahead of the one that checks the token.
        A revocation dropped any earlier would bring the token back to life.
        """
        return claims["exp"] + 2 * LEEWAY_SECONDS

    def family_revocation_expiry(self) -> int:
        """Until when a revoked login must be remembered: no token it issued is accepted after that.

        Its tokens were issued at most now, by a process whose clock may run up to
        the leeway ahead, and live at most the longer lifetime.
        """
        return self.now() + max(self._lifetimes.values()) + 3 * LEEWAY_SECONDS

    def issue(self, token_type: str, user_id: int, version: int, family: str | None = None) -> str:
        """A signed token; ``family`` is the login it descends from (a new login when None)."""
        now = self.now()
        jti = uuid.uuid4().hex
        claims: dict[str, Any] = {
            "token_type": token_type,
            "exp": now + self._lifetimes[token_type],
            "iat": now,
            "jti": jti,
            "user_id": user_id,
            "ver": version,
            "fam": family or jti,
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def issue_pair(self, user_id: int, version: int, family: str | None = None) -> dict[str, str]:
        """A fresh refresh and access token of one login, as simplejwt's token view returns them."""
        family = family or uuid.uuid4().hex
        return {
            "refresh": self.issue(REFRESH, user_id, version, family),
            "access": self.issue(ACCESS, user_id, version, family),
        }

    def decode(self, token: str, expected_type: str | None) -> dict[str, Any]:
        """The verified claims of ``token``; raises ``InvalidToken`` for anything else.

        ``expected_type`` None accepts either type (the verify endpoint).
        """
        claims = self._verified(token)
        # The signature and the claims' shape never change for a given token, so they
        # are verified once and remembered; time is checked on every use.
        now = self._clock()
        if claims["exp"] <= now - LEEWAY_SECONDS:
            raise InvalidToken("expired")
        if claims["iat"] > now + LEEWAY_SECONDS:
            raise InvalidToken("issued in the future")
        if expected_type is not None and claims["token_type"] != expected_type:
            raise WrongTokenType("wrong token type")
        return dict(claims)

    def _verify_uncached(self, token: str) -> dict[str, Any]:
        """Signature, algorithm, required claims and their types: everything but the clock."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                # exp and iat are checked against this service's clock on every use (decode).
                options={"require": REQUIRED_CLAIMS, "verify_exp": False, "verify_iat": False},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(str(exc)) from None
        if claims.get("token_type") not in (ACCESS, REFRESH):
            raise InvalidToken("wrong token type")
        if not isinstance(claims.get("fam"), str) or not claims["fam"] or len(claims["fam"]) > MAX_FAMILY_LENGTH:
            raise InvalidToken("bad fam claim")
        for name in ("ver", "exp", "iat"):
            # bool is an int subclass; a token saying ver: true is not ours.
            if not isinstance(claims.get(name), int) or isinstance(claims[name], bool):
                raise InvalidToken(f"bad {name} claim")
        user_id = claims.get("user_id")
        if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0:
            raise InvalidToken("bad user_id claim")
        if not isinstance(claims.get("jti"), str) or not claims["jti"]:
            raise InvalidToken("bad jti claim")
        return claims
