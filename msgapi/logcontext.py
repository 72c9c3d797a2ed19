"""The current request's id, for every log line written while that request is handled.

Waitress runs one request at a time per thread, and each thread has its own
context, so a context variable set by the middleware is visible to every
logger call made on that request's behalf, and to nobody else's.
"""

from __future__ import annotations

import contextvars
import logging

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` so formatters can print it on every line."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True
