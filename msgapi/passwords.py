"""Password hashing in Django's ``pbkdf2_sha256`` format, with the standard library only.

The format ``pbkdf2_sha256$<iterations>$<salt>$<base64 sha256 digest>`` is Django's,
so hashes copied from the old service's database verify unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
import threading

from . import scheduling

ALGORITHM = "pbkdf2_sha256"
_SALT_ALPHABET = string.ascii_letters + string.digits
_SALT_LENGTH = 22  # Django's: log2(62) * 22 > 128 bits of entropy


def _digest(password: str, salt: str, iterations: int) -> str:
    raw = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode("utf-8"), iterations)
    return base64.b64encode(raw).decode("ascii")


def make_password(password: str, iterations: int, salt: str | None = None) -> str:
    """Hash ``password`` with a fresh random salt (or the one given)."""
    salt = salt or "".join(secrets.choice(_SALT_ALPHABET) for _ in range(_SALT_LENGTH))
    return f"{ALGORITHM}${iterations}${salt}${_digest(password, salt, iterations)}"


def _split(encoded: str) -> tuple[int, str, str] | None:
    parts = encoded.split("$", 3)
    if len(parts) != 4 or parts[0] != ALGORITHM:
        return None
    try:
        iterations = int(parts[1])
    except ValueError:
        return None
    if iterations <= 0:
        return None
    return iterations, parts[2], parts[3]


def verify_password(password: str, encoded: str) -> bool:
    """True if ``password`` matches ``encoded``; the comparison takes constant time."""
    parts = _split(encoded)
    if parts is None:
        return False
    iterations, salt, expected = parts
    return hmac.compare_digest(_digest(password, salt, iterations).encode(), expected.encode())


def check_password(password: str, encoded: str, iterations: int) -> bool:
    """``verify_password`` that costs at least ``iterations`` rounds, whatever ``encoded`` holds.

    A hash with fewer rounds (an old import) or of another algorithm would otherwise
    answer sooner, and the time would tell which accounts hold one. The rounds it
    lacks are spent on a throwaway hash first, as Django's ``harden_runtime`` does.
    """
    parts = _split(encoded)
    missing = iterations - (parts[0] if parts else 0)
    if missing > 0:
        _digest(password, "harden-runtime", missing)
    return parts is not None and verify_password(password, encoded)


def needs_rehash(encoded: str, iterations: int) -> bool:
    """True when the stored hash is weaker than the configured work factor (Django upgrades these)."""
    parts = _split(encoded)
    return parts is None or parts[0] < iterations


class DummyHasher:
    """Burns the same hashing work as a real check, for unknown users.

    Without it, "no such user" answers faster than "wrong password" and leaks
    which usernames exist.
    """

    def __init__(self, iterations: int) -> None:
        self._encoded = make_password(secrets.token_urlsafe(16), iterations)

    def burn(self, password: str) -> None:
        verify_password(password, self._encoded)


class HashingBusy(Exception):
    """Every hashing slot stayed taken for the whole wait."""


class HashingGate:
    """Caps how many password hashes run at once, so logins cannot starve reads.

    PBKDF2 is CPU-bound; with more hashes in flight than cores, every thread
    (readers too) waits on the CPU. Over the cap a request queues for up to
    ``wait_seconds`` rather than being refused at once. But a queued request holds
    a server thread: with as many logins queued as the server has threads, reads
    would wait behind them. So at most ``max_admitted`` requests are in the gate
    (hashing or queued); one more is refused at once (503 with ``Retry-After``).
    Per process by nature.
    """

    def __init__(self, max_concurrent: int, wait_seconds: float, max_admitted: int | None = None) -> None:
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._wait_seconds = wait_seconds
        self.max_concurrent = max_concurrent
        self.max_admitted = max(max_concurrent, max_admitted if max_admitted is not None else 2**31)
        self._admitted = 0
        self._admitted_lock = threading.Lock()

    def __enter__(self) -> HashingGate:
        with self._admitted_lock:
            if self._admitted >= self.max_admitted:
                raise HashingBusy
            self._admitted += 1
        # Queueing for a slot and hashing are both waits other requests need not share.
        scheduling.step_aside()
        if not self._slots.acquire(timeout=self._wait_seconds):
            self._leave()
            scheduling.step_back()
            raise HashingBusy
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._slots.release()
        self._leave()
        scheduling.step_back()

    @property
    def admitted(self) -> int:
        """Requests in the gate now: hashing, or queued for a slot."""
        return self._admitted

    def _leave(self) -> None:
        with self._admitted_lock:
            self._admitted -= 1
