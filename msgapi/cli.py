"""The command line: ``python run.py`` (or ``msgapi``) serves the API with Waitress (``msgapi.server``).

With no subcommand it serves (``--host --port --threads``); the subcommands are
operator tasks: ``serve``, ``init-db``, ``createuser NAME [--staff]``,
``deactivate NAME``, ``import-django SOURCE_URL``. Settings come from the
environment (see ``msgapi.config``).
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import logging
import sys

from . import logcontext
from .config import Config, ConfigError, from_env
from .operations import OperationError
from .server import ServeError, open_failure, serve

log = logging.getLogger("msgapi")

SETTINGS_HELP = """\
settings (environment variables; README.md, "Configuration", has the full table):
  DATABASE_URL      sqlite:///msgapi.sqlite3 (default) or postgresql://user:password@host:5432/db
  SECRET_KEY        signs the tokens, 32+ characters; required with PostgreSQL
                    (SQLite without it: a key generated once beside the database file)
  THREADS           Waitress worker threads (default 16; --threads overrides it)
  AUTH_RATE_LIMIT   logins and registrations per client, e.g. 10/minute, or off
  TRUSTED_PROXIES   proxies whose X-Forwarded-For is believed
  LOG_FORMAT        text (default) or json
also: ACCESS_TOKEN_LIFETIME, REFRESH_TOKEN_LIFETIME, PASSWORD_HASH_ITERATIONS,
  CORS_ALLOW_ORIGINS, HASH_CONCURRENCY, HASH_WAIT_SECONDS, LIST_PAGE_SIZE,
  ROTATE_REFRESH_TOKENS, METRICS.
exit codes: 0 done, 1 the task failed, 2 a setting or argument is wrong."""


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is outside 0-65535")
    return port


def _add_serve_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    # Subparser options default to SUPPRESS so they do not overwrite the top-level ones.
    default = (lambda value: value) if defaults else (lambda value: argparse.SUPPRESS)
    parser.add_argument("--host", default=default("127.0.0.1"), help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=_port, default=default(None), help="port to listen on (default: PORT, else 8000; 0: any)"
    )
    parser.add_argument("--threads", type=int, default=default(None), help="worker threads (default: THREADS or 16)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msgapi",
        description="The msgapi REST service and its operator tasks.",
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_serve_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve_parser = commands.add_parser(
        "serve",
        help="serve the API with Waitress (the default)",
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_serve_options(serve_parser, False)
    commands.add_parser("init-db", help="create missing tables and indexes, then exit")
    createuser = commands.add_parser("createuser", help="create a user; the password is read from a prompt or stdin")
    createuser.add_argument("username")
    createuser.add_argument("--staff", action="store_true", help="make the user staff (may edit any message)")
    deactivate = commands.add_parser("deactivate", help="deactivate a user and end every token they hold")
    deactivate.add_argument("username")
    importer = commands.add_parser("import-django", help="copy users and messages from the old Django database")
    importer.add_argument("source_url", help="sqlite:///path/db.sqlite3 or postgresql://user@host/db")
    return parser


def _load_config(threads: int | None = None) -> Config:
    # The generated key is made once the start can no longer fail on a setting, the port or
    # the import source (``with_secret_key``): a failed start leaves no key file behind.
    config = from_env(generate_key=False)
    if threads is not None:
        if threads < 1:
            raise ConfigError("--threads must be a positive integer")
        config = dataclasses.replace(config, threads=threads)
    return config


def _read_password(prompt: str) -> str:
    """From the terminal without echo, or the first line of stdin when piped (never argv)."""
    if sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if getpass.getpass("Again: ") != first:
            raise OperationError("the passwords do not match")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _run_task(args: argparse.Namespace, config: Config) -> int:
    import peewee

    from . import operations
    from .store import open_store

    # A source that cannot be opened or read, or holds what cannot be imported, stops the
    # import before our own files (the database, the generated key) are created.
    rows = None
    if args.command == "import-django":
        rows = operations.read_django_source(operations.open_source(args.source_url))
    config = config.with_secret_key()
    # The generated-key notice belongs to serve; a command shows it only when it made the key.
    config.log_startup_warnings(key_notice=config.key_generated)
    try:
        store = open_store(config)
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        raise open_failure(config, exc) from None
    try:
        if args.command == "init-db":
            print("tables ready")
        elif args.command == "createuser":
            password = _read_password(f"Password for {args.username}: ")
            user = operations.create_user(
                store,
                args.username, password, staff=args.staff, iterations=config.password_hash_iterations
            )
            print(f"created user {user.username!r} (id {user.id}{', staff' if user.is_staff else ''})")
        elif args.command == "deactivate":
            user = operations.deactivate_user(store, args.username)
            print(f"deactivated {user.username!r}; every token they held has stopped working")
        elif args.command == "import-django":
            assert rows is not None
            report = operations.import_django(store, rows)
            print(
                f"users: {report.users_added} added, {report.users_present} already here; "
                f"messages: {report.messages_added} added, {report.messages_present} already here"
            )
            if report.unusable_password_hashes:
                print(f"warning: {report.unusable_password_hashes} users have non-PBKDF2 hashes and cannot log in")
            for line in report.skipped_messages:
                print(f"skipped {line}")
    finally:
        store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logcontext.configure("text")  # until the configuration says otherwise
    try:
        config = _load_config(getattr(args, "threads", None))
        logcontext.configure(config.log_format)
        if args.command in (None, "serve"):
            return serve(config, args.host, config.port if args.port is None else args.port)
        return _run_task(args, config)
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    except (OperationError, ServeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
