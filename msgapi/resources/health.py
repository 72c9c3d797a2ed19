"""/healthz: is the database answering?"""

from __future__ import annotations

import falcon

from ..db import database


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        # Any database error goes to the app's handler: 503 with Retry-After.
        database.execute_sql("SELECT 1").fetchone()
        resp.cache_control = ["no-store"]
        resp.media = {"status": "ok"}

    on_head = on_get
