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


def _escaped_char(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char.isprintable():
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape_controls(text: str) -> str:
    """``text`` safe inside one line of the text log, with its escaping unambiguous.

    Paths and other values from a request may hold CR and LF (a forged log line),
    ESC (terminal escape sequences), other C0 and C1 controls, DEL, line separators
    or invisible format characters. Every character that is not printable is written
    as ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``, and a backslash as two, as Python's
    own escapes. Almost every line is plain, and is returned as it is.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(map(_escaped_char, text))


def _escape_controls_keeping_lines(text: str) -> str:
    """A traceback's text with each of its lines escaped; its own line breaks kept."""
    return "\n".join(map(escape_controls, text.split("\n")))


def _json_safe(line: str) -> str:
    """A JSON line with what ``json.dumps`` leaves raw (DEL, C1, line separators...) as ``\\u`` escapes.

    Valid JSON either way, but a raw U+2028 or U+0085 splits the line for readers that
    split on every Unicode line break, and a raw C1 control reaches a terminal.
    """
    if line.isprintable():
        return line
    out = []
    for char in line:
        if char.isprintable():
            out.append(char)
        else:
            units = char.encode("utf-16-be")
            out.extend(f"\\u{int.from_bytes(units[i : i + 2], 'big'):04x}" for i in range(0, len(units), 2))
    return "".join(out)


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` so formatters can print it on every line."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (``LOG_FORMAT=json``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = self._entry(record.created, record.levelname, record.name, getattr(record, "request_id", "-"))
        entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _json_safe(json.dumps(entry, ensure_ascii=False))

    def line(self, created: float, level: str, name: str, request_id: str, message: str) -> str:
        """What ``format`` makes of a record with these fields and no exception."""
        entry = self._entry(created, level, name, request_id)
        entry["message"] = message
        return _json_safe(json.dumps(entry, ensure_ascii=False))

    @staticmethod
    def _entry(created: float, level: str, name: str, request_id: str) -> dict[str, Any]:
        return {
            "time": datetime.datetime.fromtimestamp(created, datetime.timezone.utc).isoformat(),
            "level": level,
            "logger": name,
            "message": None,  # filled in by the caller; here to keep the key order
            "request_id": request_id,
        }


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class TextFormatter(logging.Formatter):
    """The standard formatter, with the date part of ``asctime`` rendered once per second,
    and every message escaped (``escape_controls``): one record, one line.

    ``time.strftime`` on every access-log line was a measurable share of a cheap request.
    """

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._asctime(record.created, record.msecs)

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        record.message = escape_controls(message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message  # other handlers format the record too

    def formatException(self, ei: Any) -> str:
        return _escape_controls_keeping_lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _escape_controls_keeping_lines(super().formatStack(stack_info))

    def _asctime(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second:  # a benign race: two threads may both render one second
            self._second_text = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return f"{self._second_text},{int(msecs):03d}"

    def line(self, created: float, level: str, name: str, request_id: str, message: str) -> str:
        """What ``format`` makes of a record with these fields and no exception (see TEXT_FORMAT)."""
        asctime = self._asctime(created, (created - int(created)) * 1000)
        return f"{asctime} {level} {name} [{request_id}] {escape_controls(message)}"


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

    def write_line(self, line: str) -> None:
        """A line already formatted by this handler's formatter (see ``AccessLog``)."""
        with self.lock:
            self.stream.write(line + self.terminator)


# The handler ``configure`` installed, while it is the only one.
_installed: BufferedStderrHandler | None = None


class AccessLog:
    """One INFO line per request on the ``msgapi.access`` logger, cheaply.

    Through the logging module a line costs a LogRecord, two filter passes and a
    format: a large share of a cached GET. When logging is as ``configure`` left it
    (our handler alone, nothing attached to this logger) the line is formatted by
    that handler's own formatter and written straight into it: the same line for
    a fraction of the cost. Any other set-up (a test's capture, an embedding
    application's handlers) gets the ordinary logging call.
    """

    def __init__(self) -> None:
        self._logger = logging.getLogger("msgapi.access")
        self._root = logging.getLogger()

    def info(self, message: str, request_id: str) -> None:
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return
        handler = _installed
        if (
            handler is not None
            and self._root.handlers == [handler]
            and not logger.handlers
            and not logger.filters
            and logger.propagate
            and handler.level <= logging.INFO
            and len(handler.filters) == 1
            and isinstance(handler.formatter, (TextFormatter, JsonFormatter))
        ):
            handler.write_line(handler.formatter.line(time.time(), "INFO", logger.name, request_id, message))
        else:
            logger.info("%s", message)


def configure(log_format: str = "text") -> None:
    """Log to stderr, each line carrying the id of the request it is about (``-`` if none)."""
    global _installed
    handler = BufferedStderrHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    _installed = handler
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
