"""Serving the app with Waitress: the listening socket first, then the app, then run until stopped.

The command line (``msgapi.cli``) parses the arguments and settings and calls ``serve``.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

from .config import Config, ConfigError

log = logging.getLogger("msgapi")

# How often CPython hands the GIL to another thread (default 5 ms). Every SQLite row
# and socket call releases the GIL; the thread that released it then waits up to the
# whole interval to get it back, so with many busy threads requests queue behind each
# other (a "convoy"); a shorter interval measurably raised throughput under load (see
# the commit that set it). A process-wide setting, so it belongs to the runner, not the app.
GIL_SWITCH_INTERVAL_SECONDS = 0.0005

# Waitress's own backstop. The app answers bodies over 64 KiB with a problem+json
# 413 first; this only stops clients that lie about or omit Content-Length.
WAITRESS_MAX_BODY_BYTES = 4 * 1024 * 1024


class ServeError(Exception):
    """The server cannot start for a reason outside the settings (the port is taken)."""


class _AppSlot:
    """The WSGI app, filled in once the port is ours: a taken port must not leave a new database behind."""

    def __init__(self) -> None:
        self.app: Any = None

    def __call__(self, environ: dict, start_response: Any) -> Any:
        return self.app(environ, start_response)


def open_failure(config: Config, exc: Exception) -> ConfigError:
    """The database named by the settings cannot be opened: one line for the operator (also used by the CLI's tasks)."""
    from .store import describe_open_failure

    return ConfigError(describe_open_failure(config.database_url, exc))


def serve(config: Config, host: str, port: int) -> int:
    import peewee

    from .app import create_app

    slot = _AppSlot()
    try:
        server = _create_server(config, slot, host, port)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        slot.app = create_app(config)
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        server.close()
        raise open_failure(config, exc) from None
    except BaseException:
        server.close()
        raise
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)
    shown_host = f"[{host}]" if ":" in host else host
    log.info("msgapi serving on http://%s:%s/ with %d threads", shown_host, server.effective_port, config.threads)
    # systemd and service managers stop us with SIGTERM: shut down as cleanly as on Ctrl+C.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.run()
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        server.close()
    return 0


def _create_server(config: Config, app: Any, host: str, port: int) -> Any:
    import waitress

    from .scheduling import make_dispatcher

    dispatcher = make_dispatcher(config)
    # Waitress takes a dispatcher only through this argument; see scheduling.py for why ours.
    dispatch = {} if dispatcher is None else {"_dispatcher": dispatcher}
    return waitress.create_server(
        app,
        **dispatch,
        host=host,
        port=port,
        threads=config.threads,
        max_request_body_size=WAITRESS_MAX_BODY_BYTES,
        # Idle or half-open connections must not crowd clients out: many may be open,
        # and each is closed after CHANNEL_TIMEOUT seconds without activity (checked
        # as often as that, up to Waitress's default 30 s). poll(), not select(),
        # which cannot watch more than 1024 descriptors.
        connection_limit=config.connection_limit,
        channel_timeout=config.channel_timeout,
        cleanup_interval=min(30, config.channel_timeout),
        asyncore_use_poll=True,
        ident="msgapi",
        # The app decides whom to believe (TRUSTED_PROXIES, several proxies and networks);
        # Waitress would otherwise strip X-Forwarded-For before the app sees it.
        clear_untrusted_proxy_headers=False,
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
