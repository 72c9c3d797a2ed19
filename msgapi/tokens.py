"""Issue and decode the JWTs, with the claims simplejwt used.

Claims: ``token_type`` (``access`` or ``refresh``), ``exp``, ``iat``, ``jti``,
``user_id`` as simplejwt, plus ``ver`` (the user's token version: bumping it ends
every token issued before) and, on refresh tokens, ``fam`` (the login the token
descends from, so a reused rotated token can revoke its whole family). HS256
only; decoding pins the algorithm and requires every claim, so ``alg: none``,
other algorithms and tokens missing a claim are refused.
"""

from __future__ import annotations

import functools
import time
import uuid
from typing import Any

import jwt

ALGORITHM = "HS256"
ACCESS = "access"
REFRESH = "refresh"
REQUIRED_CLAIMS = ["token_type", "exp", "iat", "jti", "user_id", "ver"]
# Clock skew tolerated between processes or machines that share the key.
LEEWAY_SECONDS = 30


class InvalidToken(Exception):
    """The token is malformed, forged, expired, or of the wrong type."""


class WrongTokenType(InvalidToken):
    """A valid token of the other type (an access token where a refresh token belongs)."""


class TokenService:
    def __init__(self, secret_key: str, access_lifetime: int, refresh_lifetime: int) -> None:
        self._key = secret_key
        self._lifetimes = {ACCESS: access_lifetime, REFRESH: refresh_lifetime}
        # Verifying a token costs about 60 µs, most of an authenticated request; clients
        # reuse an access token for hours. Failures are not cached (exceptions never are).
        self._verified = functools.lru_cache(maxsize=4096)(self._verify_uncached)

    def lifetime(self, token_type: str) -> int:
        return self._lifetimes[token_type]

    def issue(self, token_type: str, user_id: int, version: int, family: str | None = None) -> str:
        now = int(time.time())
        jti = uuid.uuid4().hex
        claims: dict[str, Any] = {
            "token_type": token_type,
            "exp": now + self._lifetimes[token_type],
            "iat": now,
            "jti": jti,
            "user_id": user_id,
            "ver": version,
        }
        if token_type == REFRESH:
            claims["fam"] = family or jti
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def issue_pair(self, user_id: int, version: int, family: str | None = None) -> dict[str, str]:
        """A fresh refresh and access token, as simplejwt's token view returns them."""
        return {
            "refresh": self.issue(REFRESH, user_id, version, family),
            "access": self.issue(ACCESS, user_id, version),
        }

    def decode(self, token: str, expected_type: str | None) -> dict[str, Any]:
        """The verified claims of ``token``; raises ``InvalidToken`` for anything else.

        ``expected_type`` None accepts either type (the verify endpoint).
        """
        claims = self._verified(token)
        # The signature and the claims' shape never change for a given token, so they
        # are verified once and remembered; time is checked on every use.
        now = time.time()
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
                options={"require": REQUIRED_CLAIMS},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(str(exc)) from None
        if claims.get("token_type") not in (ACCESS, REFRESH):
            raise InvalidToken("wrong token type")
        if claims["token_type"] == REFRESH and not (isinstance(claims.get("fam"), str) and claims["fam"]):
            raise InvalidToken("refresh token without a family")
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
