"""The files msgapi makes beside a SQLite database without SECRET_KEY: the generated key, and mode checks.

The key is created once, atomically, readable by its owner only; every process that
starts on the same file reads the same key.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import tempfile
from pathlib import Path

# The shortest SECRET_KEY accepted; a generated key is longer (48 random bytes).
MIN_SECRET_KEY_LENGTH = 32


class KeyFileError(Exception):
    """The key file cannot be read or written; the message is one line for the operator."""


# What secrets.token_urlsafe writes, at the minimum length.
_GENERATED_KEY = re.compile(rf"[A-Za-z0-9_-]{{{MIN_SECRET_KEY_LENGTH},}}\Z")


def _read_key_file(key_file: Path) -> str:
    try:
        key = key_file.read_text(encoding="ascii").strip()
    except (UnicodeDecodeError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a key"
        raise KeyFileError(f"cannot read the key file {key_file}: {reason}; fix it, or set SECRET_KEY") from None
    if not _GENERATED_KEY.match(key):
        raise KeyFileError(
            f"the generated key file {key_file} is empty or malformed; "
            "delete it to generate a new key (every token ends), or set SECRET_KEY"
        )
    return key


def _create_key_file(key_file: Path) -> bool:
    """Write a new key to ``key_file`` unless one is there; True if this call wrote it.

    The key is written to a private temporary file first and then linked into
    place, so the file appears complete or not at all, and of processes starting
    together the first to link wins and every one reads the same key.
    """
    fd, temporary = tempfile.mkstemp(dir=key_file.parent, prefix=key_file.name + ".", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, key_file)
            return True
        except FileExistsError:
            return False
        except OSError:
            # A file system without hard links. Renaming refuses to replace on Windows;
            # elsewhere it would, so look first (racy only on such file systems).
            if key_file.exists():
                return False
            os.rename(temporary, key_file)
            return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def load_or_create_secret_key(key_file: Path) -> tuple[str, bool]:
    """The generated key beside the SQLite file, created once if absent; and whether it was created now.

    The file has mode 0600 where the platform has POSIX permissions (on Windows it
    inherits the folder's ACL, which is the owner's).
    """
    created = False
    if not key_file.exists() and not key_file.is_symlink():
        try:
            created = _create_key_file(key_file)
        except OSError as exc:
            raise KeyFileError(f"cannot write the key file {key_file}: {exc.strerror}; set SECRET_KEY") from None
    return _read_key_file(key_file), created


def shared_with_others(path: Path) -> bool:
    """True when ``path`` exists and its POSIX mode lets the group or others read or write it."""
    if os.name != "posix":
        return False
    try:
        return bool(stat.S_IMODE(path.stat().st_mode) & 0o077)
    except OSError:
        return False
