"""The command line: ``python run.py`` (or ``msgapi``) serves the API with Waitress.

Settings come from the environment (see ``msgapi.config``); only where to
listen and how many threads come from the command line.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from .config import ConfigError, from_env
from .logcontext import RequestIdFilter

log = logging.getLogger("msgapi")

# Waitress's own backstop. The app answers bodies over 64 KiB with a problem+json
# 413 first; this only stops clients that lie about or omit Content-Length.
WAITRESS_MAX_BODY_BYTES = 4 * 1024 * 1024


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msgapi", description="Serve the msgapi REST service with Waitress.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--threads", type=int, default=None, help="worker threads (default: THREADS or 8)")
    return parser


def configure_logging() -> None:
    """Readable lines on stderr, each carrying the id of the request it is about (``-`` if none)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def serve(host: str, port: int, threads: int | None) -> int:
    import dataclasses

    import waitress

    from .app import create_app

    try:
        config = from_env()
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    if threads is not None:
        if threads < 1:
            log.error("configuration error: --threads must be a positive integer")
            return 2
        config = dataclasses.replace(config, threads=threads)
    app = create_app(config)
    server = waitress.create_server(
        app,
        host=host,
        port=port,
        threads=config.threads,
        max_request_body_size=WAITRESS_MAX_BODY_BYTES,
        ident="msgapi",
        clear_untrusted_proxy_headers=True,
    )
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


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging()
    return serve(args.host, args.port, args.threads)


if __name__ == "__main__":
    sys.exit(main())
