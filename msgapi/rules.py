"""Username, password and profile rules, shared by the HTTP resources and the operator commands.

The ``read_*`` functions record what is wrong in the ``FieldErrors`` they are given and
return None (or leave a field out); the caller decides what a problem becomes: a 400 for
a client, a one-line error for an operator. Nothing here knows about HTTP.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .store import MAX_USERNAME_LENGTH as STORED_USERNAME_LENGTH
from .store import User

if TYPE_CHECKING:
    from .body import FieldErrors

# Django's UnicodeUsernameValidator: letters, digits and @ . + - _
_USERNAME = re.compile(r"[\w.@+-]+\Z")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+\Z")
MAX_USERNAME_LENGTH = STORED_USERNAME_LENGTH
USERNAME_TOO_LONG_FOLDED = (
    f"Ensure this field has no more than {MAX_USERNAME_LENGTH} characters once letter case is ignored "
    "(some letters count as several, e.g. ß as ss)."
)
MIN_PASSWORD_LENGTH = 8
# Long enough for any passphrase; short enough that nobody sends megabytes to hash.
MAX_PASSWORD_LENGTH = 1024
PROFILE_FIELDS = {"email": 254, "first_name": 150, "last_name": 150}


def _username_problem(value: str) -> str | None:
    if not _USERNAME.match(value):
        return "Enter a valid username. This value may contain only letters, numbers, and @/./+/-/_ characters."
    return None


def _email_problem(value: str) -> str | None:
    return None if not value or _EMAIL.match(value) else "Enter a valid email address."


def read_username(errors: FieldErrors, body: dict[str, Any]) -> str | None:
    """A new username, NFKC-normalised as Django stores it, with rules checked on that form."""
    raw = errors.string(body, "username", max_length=MAX_USERNAME_LENGTH)
    if raw is None:
        return None
    username = User.normalize(raw)
    problem = _username_problem(username)
    if problem is None and max(len(username), len(User.canonical(username))) > MAX_USERNAME_LENGTH:
        problem = USERNAME_TOO_LONG_FOLDED
    if problem is not None:
        errors.add("username", problem)
        return None
    return username


def read_new_password(errors: FieldErrors, body: dict[str, Any], field: str, username: str | None) -> str | None:
    """A new password: 8+ characters, not all digits, not the username (Django's validators)."""
    password = errors.string(body, field, min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)
    if password is None:
        return None
    problems = []
    if password.isdigit():
        problems.append("This password is entirely numeric.")
    if username and password.casefold() == username.casefold():
        problems.append("The password is too similar to the username.")
    for problem in problems:
        errors.add(field, problem)
    return None if problems else password


def read_profile(errors: FieldErrors, body: dict[str, Any]) -> dict[str, str]:
    """The optional profile fields present in ``body``, validated."""
    profile = {}
    for field, max_length in PROFILE_FIELDS.items():
        value = errors.string(
            body,
            field,
            required=False,
            allow_blank=True,
            strip=True,
            max_length=max_length,
            check=_email_problem if field == "email" else None,
        )
        if value is not None:
            profile[field] = value
    return profile
