"""Idempotency keys: a create retried with the same ``Idempotency-Key`` creates one message.

Kept in the database, so that a retry reaching another process, or this one after a
restart, finds the key. A key is claimed while its message is written, then holds the answer.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

import peewee

from . import messages
from .connection import database, dialect, single_row, write_lock
from .render import RenderedMessage
from .schema import IdempotencyKey

# A claim older than this is taken to be from a request that died, and may be taken over.
IDEMPOTENCY_LEASE_SECONDS = 30
# Expired keys deleted per claim: pruning never makes one create slow.
IDEMPOTENCY_PRUNE_BATCH = 100


@dataclasses.dataclass(frozen=True)
class KeyClaim:
    """What claiming an idempotency key found: exactly one of these is set, or neither (in flight)."""

    claim: str | None = None  # claimed: create the message with create_once
    replay: tuple[int, RenderedMessage] | None = None  # done before: (id, message) as first answered
    mismatch: bool = False  # used before for a different request


def _this_key(user_id: int, key: str) -> peewee.Expression:
    return (IdempotencyKey.user == user_id) & (IdempotencyKey.key == key)


def claim(user_id: int, key: str, fingerprint: str, now: int, ttl: int) -> KeyClaim:
    """Claim ``key`` for a create by ``user_id``, or say what an earlier request with it left.

    One INSERT decides between concurrent requests with one key: the one that inserts
    the row creates the message; the others find the row, in flight or answered.
    """
    claim = secrets.token_hex(16)
    with write_lock(), database.atomic():
        expired = IdempotencyKey.created_at < now - ttl
        oldest = dialect().skip_locked(
            IdempotencyKey.select(IdempotencyKey.user, IdempotencyKey.key)
            .where(expired)
            .limit(IDEMPOTENCY_PRUNE_BATCH)
        )
        IdempotencyKey.delete().where(
            peewee.Tuple(IdempotencyKey.user, IdempotencyKey.key).in_(oldest)
            | (_this_key(user_id, key) & expired)
        ).execute()
        inserted = single_row(
            IdempotencyKey.insert(user=user_id, key=key, fingerprint=fingerprint, claim=claim, created_at=now)
            .on_conflict_ignore()
            .returning(IdempotencyKey.claim)
        )
        if inserted is not None:
            return KeyClaim(claim=claim)
        earlier = IdempotencyKey.get_or_none(_this_key(user_id, key))
        if earlier is None:  # deleted since the INSERT saw it: the client may simply retry
            return KeyClaim()
        if earlier.fingerprint != fingerprint:
            return KeyClaim(mismatch=True)
        if earlier.response is not None:
            return KeyClaim(replay=(earlier.message_id, RenderedMessage(earlier.response, earlier.etag)))
        if earlier.created_at >= now - IDEMPOTENCY_LEASE_SECONDS:
            return KeyClaim()
        taken = (
            IdempotencyKey.update(claim=claim, created_at=now)
            .where(_this_key(user_id, key) & (IdempotencyKey.claim == earlier.claim))
            .execute()
        )
        return KeyClaim(claim=claim) if taken else KeyClaim()


class _ClaimLost(Exception):
    """Another request took the key over: this create must not count."""


def create_once(
    content: str, claims: dict[str, Any], key: str, claim: str
) -> tuple[int, RenderedMessage] | bool | None:
    """``messages.create`` under a claimed key, storing the answer with the key in the same transaction.

    None (and the key released) when the token's user may not create; False when the
    claim was taken over meanwhile (nothing created).
    """
    this_claim = _this_key(claims["user_id"], key) & (IdempotencyKey.claim == claim)
    try:
        with write_lock(), database.atomic():
            created = messages.create(content, claims)
            if created is None:
                IdempotencyKey.delete().where(this_claim).execute()
                return None
            message_id, message = created
            stored = (
                IdempotencyKey.update(message_id=message_id, response=message.json, etag=message.etag)
                .where(this_claim)
                .execute()
            )
            if not stored:
                raise _ClaimLost
            return created
    except _ClaimLost:
        return False


def release(user_id: int, key: str, claim: str) -> None:
    """Give up a claim whose create failed, so that a retry need not wait for the lease."""
    with write_lock():
        IdempotencyKey.delete().where(
            _this_key(user_id, key) & (IdempotencyKey.claim == claim) & IdempotencyKey.response.is_null()
        ).execute()
