"""What a database URL names, and whether msgapi can use it.

``DATABASE_URL`` and ``import-django``'s source are both read here: a ``sqlite:///`` file
or a ``postgresql://`` (or ``postgres://``) server, its parameters percent-decoded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from playhouse.db_url import parse


def sqlite_path(database_url: str) -> Path:
    """The file behind a ``sqlite:///`` URL (relative to the working directory)."""
    return Path(unquote(urlsplit(database_url).path[1:]))


def database_url_problem(url: str, setting: str) -> str | None:
    """What is wrong with a ``sqlite:///`` or ``postgresql://`` URL, in one line; None if nothing.

    Never quotes the URL's parts: a password with an unescaped ``/`` or ``@`` ends up in
    what would be read as the host or the port.
    """
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in ("sqlite", "postgres", "postgresql"):
        return f"{setting} must start with sqlite:/// or postgresql://, got scheme {scheme!r}"
    escape_hint = "percent-encode '@', ':', '/', '[' and ']' in the user name and password"
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"{setting} has an unmatched '[' or ']' in its host; {escape_hint}"
    try:
        _ = parts.port  # reading it checks it
    except ValueError:
        return f"{setting} has a port that is not a number from 0 to 65535; {escape_hint}"
    if scheme == "sqlite":
        if not parts.path[1:] or url.endswith(":memory:"):
            return f"{setting}: a SQLite URL must name a file, e.g. sqlite:///msgapi.sqlite3"
    elif not parts.path[1:]:
        return f"{setting}: a PostgreSQL URL must name a database, e.g. postgresql://user:password@host:5432/db"
    else:
        unknown = _unknown_postgresql_option(parts.query)
        if unknown is not None:
            return f"{setting}: {unknown!r} is not a PostgreSQL connection option (see libpq's parameter keywords)"
    return None


def _unknown_postgresql_option(query: str) -> str | None:
    """The first option in a ``postgresql://`` URL's query that libpq does not know, if any.

    The options go to libpq as connection parameters; one it does not know (or one of the
    pool's own, which msgapi sets) would stop the start with a traceback.
    """
    from psycopg2 import ProgrammingError
    from psycopg2.extensions import make_dsn, parse_dsn

    for name, value in parse_qsl(query, keep_blank_values=True):
        try:
            parse_dsn(make_dsn(**{name: value}))
        except ProgrammingError:
            return name
    return None


def postgresql_parameters(url: str) -> dict[str, Any]:
    """The connection parameters in a ``postgresql://`` URL, the database's name under ``database``."""
    params = parse(url)
    # playhouse leaves percent-escapes in the credentials; libpq wants them decoded.
    for key in ("user", "password"):
        if key in params:
            params[key] = unquote(params[key])
    return params
