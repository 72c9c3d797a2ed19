"""/healthz: is the database answering?"""

from __future__ import annotations

import falcon

from ..store import Store


class Health:
    def __init__(self, store: Store) -> None:
        self._store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        # Any database error goes to the app's handler: 503 with Retry-After.
        self._store.ping()
        resp.cache_control = ["no-store"]
        resp.media = {"status": "ok"}

    on_head = on_get
