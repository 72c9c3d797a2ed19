"""The ceiling: a bare Falcon app under Waitress that answers fixed message-shaped JSON.

``python -m bench.ceiling_app [--host 127.0.0.1] [--port 0] [--threads 8]``

``GET /item`` answers one message object, ``GET /list`` an array of 100 of them. The
objects are built once; each request still serializes them (``resp.media``), as the
real service does. No middleware, no database, no logging: what msgapi costs on top of
Falcon + Waitress + JSON is the gap between this and the real numbers.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import falcon
import waitress

LIST_SIZE = 100


def message(i: int) -> dict:
    return {
        "id": i,
        "content": f"seed message #{i}",
        "views": 0,
        "created_at": "2026-01-01T00:00:00.000000Z",
        "updated_at": "2026-01-01T00:00:00.000000Z",
        "author": "bench",
    }


class Fixed:
    def __init__(self, payload: object) -> None:
        self._payload = payload

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._payload


def create_app() -> falcon.App:
    app = falcon.App()
    app.add_route("/item", Fixed(message(1)))
    app.add_route("/list", Fixed([message(i) for i in range(LIST_SIZE, 0, -1)]))
    return app


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    server = waitress.create_server(create_app(), host=args.host, port=args.port, threads=args.threads, ident="ceiling")
    logging.getLogger("ceiling").info(
        "ceiling serving on http://%s:%s/ with %d threads", args.host, server.effective_port, args.threads
    )
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
