"""The current request's id, for every log line written while that request is handled.

Waitress runs one request at a time per thread, and each thread has its own
context, so a context variable set by the middleware is visible to every
logger call made on that request's behalf, and to nobody else's.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import sys
import threading
import time
from typing import Any

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` so formatters can print it on every line."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (``LOG_FORMAT=json``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class TextFormatter(logging.Formatter):
    """The standard formatter, with the date part of ``asctime`` rendered once per second.

    ``time.strftime`` on every access-log line was a measurable share of a cheap request.
    """

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:  # a benign race: two threads may both render one second
            self._second_text = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return f"{self._second_text},{int(record.msecs):03d}"


class BufferedStderrHandler(logging.StreamHandler):
    """Writes log lines through a buffer, flushed twice a second and at once for warnings.

    stderr is line-buffered, so the access log would cost a write system call per
    request; under load those calls, each releasing and re-taking the GIL, cost a
    fifth of the throughput. Buffered, a busy second costs a handful of writes.
    """

    FLUSH_INTERVAL = 0.5

    def __init__(self) -> None:
        stream: Any = sys.stderr
        try:
            stream = open(sys.stderr.fileno(), "w", buffering=1 << 16, encoding="utf-8", closefd=False)
        except (AttributeError, OSError, ValueError):
            pass  # no real stderr (e.g. pythonw, a test harness): write through as it is
        super().__init__(stream)
        flusher = threading.Thread(target=self._flush_periodically, name="log-flusher", daemon=True)
        flusher.start()

    def _flush_periodically(self) -> None:
        while True:
            time.sleep(self.FLUSH_INTERVAL)
            self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
            if record.levelno >= logging.WARNING:
                self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def configure(log_format: str = "text") -> None:
    """Log to stderr, each line carrying the id of the request it is about (``-`` if none)."""
    handler = BufferedStderrHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # The logging HOWTO's "Optimization" switches: we print none of these fields, and
    # collecting them was a third of the access log's cost per request.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    # Waitress warns on every request that waits for a free thread: under load that is a
    # line per request, and costs what it reports. Queueing is normal; errors still show.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
