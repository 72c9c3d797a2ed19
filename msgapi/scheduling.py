"""Waitress's thread pool, scheduled for a process that runs Python on one core at a time.

Waitress hands each request to an idle thread of its pool. With the GIL only one
of them runs Python at a time, so under load the threads take turns: every
request costs a thread wake-up, and every GIL release (each SQLite statement, each
socket call) lets another thread in, after which the first waits for the GIL again.
On a 2-core machine with 16 connections that turn-taking cost more than the
requests themselves (the benchmark shows it: one thread served more than sixteen).

``FocusedDispatcher`` runs requests one after another on as few threads as keep
the CPU busy: a thread that finishes a request takes the next queued one itself,
and a second request starts only while the first waits on something outside the
process. Code that waits says so (``step_aside`` before, ``step_back`` after):
password hashing does, so the pool still serves reads during a storm of logins.
A request that blocks without saying so (SQLite waiting for another process's
write) does not stall the queue for long: after ``STALL_SECONDS`` without
progress another thread starts on the next request.

Per process by nature. In-process callers (tests, CLI commands) run without a
dispatcher, and stepping aside is then free.
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
import time

import waitress
from waitress.task import ThreadedTaskDispatcher

from .config import Config

log = logging.getLogger("msgapi")
_current = threading.local()

# What FocusedDispatcher relies on in Waitress beyond its documented API: the attributes
# of ThreadedTaskDispatcher it reads and writes, the methods it overrides, and the
# create_server argument that takes a dispatcher (Waitress calls it a test shim). A
# Waitress release that changes any of them gets Waitress's own dispatcher, with a warning.
WAITRESS_INTERNALS = ("lock", "queue", "queue_cv", "thread_exit_cv", "threads", "active_count", "stop_count", "logger")
WAITRESS_OVERRIDES = {"handler_thread": ["thread_no"], "add_task": ["task"]}


def focused_dispatch_unsupported() -> str | None:
    """Why the installed Waitress cannot take ``FocusedDispatcher``, or None when it can."""
    if "_dispatcher" not in inspect.signature(waitress.create_server).parameters:
        return "waitress.create_server() takes no _dispatcher argument"
    probe = ThreadedTaskDispatcher()
    missing = [name for name in WAITRESS_INTERNALS if not hasattr(probe, name)]
    if missing:
        return f"ThreadedTaskDispatcher lacks {', '.join(missing)}"
    for method, parameters in WAITRESS_OVERRIDES.items():
        function = getattr(ThreadedTaskDispatcher, method, None)
        if function is None or list(inspect.signature(function).parameters)[1:] != parameters:
            return f"ThreadedTaskDispatcher.{method} is not {method}(self, {', '.join(parameters)})"
    return None


def make_dispatcher(config: Config) -> ThreadedTaskDispatcher | None:
    """The dispatcher for ``config.threads`` threads: focused on SQLite, Waitress's own on PostgreSQL.

    None when the installed Waitress takes no dispatcher at all: the caller then lets
    Waitress make its own.

    On PostgreSQL a request spends most of its time waiting for the server, and
    stepping aside for every statement cost more than it saved (measured with the
    benchmark: fewer requests per second), so there Waitress's own dispatcher stays.
    Without the GIL (free-threaded builds) threads run in parallel and Waitress's
    own dispatcher is right too.
    """
    gil_enabled = getattr(sys, "_is_gil_enabled", lambda: True)()
    if not (config.is_sqlite and gil_enabled):
        dispatcher = ThreadedTaskDispatcher()
    else:
        unsupported = focused_dispatch_unsupported()
        if unsupported is not None:
            log.warning(
                "this Waitress release is not one msgapi's request scheduling was built for (%s): "
                "using Waitress's own dispatcher, which serves correctly but slower on SQLite",
                unsupported,
            )
            if "_dispatcher" not in inspect.signature(waitress.create_server).parameters:
                return None
            dispatcher = ThreadedTaskDispatcher()
        else:
            dispatcher = FocusedDispatcher()
    dispatcher.set_thread_count(config.threads)
    return dispatcher


def step_aside() -> None:
    """This request starts waiting outside the process: the next one may start meanwhile."""
    dispatcher: FocusedDispatcher | None = getattr(_current, "dispatcher", None)
    if dispatcher is not None:
        dispatcher.step_aside()


def step_back() -> None:
    """The wait announced by ``step_aside`` is over."""
    dispatcher: FocusedDispatcher | None = getattr(_current, "dispatcher", None)
    if dispatcher is not None:
        dispatcher.step_back()


class FocusedDispatcher(ThreadedTaskDispatcher):
    """Waitress's dispatcher, but at most ``runners`` requests run at once (see the module)."""

    # A request that runs this long without finishing or saying it waits is presumed
    # blocked: another thread starts on the next request.
    STALL_SECONDS = 0.05

    def __init__(self, runners: int = 1) -> None:
        super().__init__()
        self.runners = runners
        self.running = 0  # requests being served and not stepped aside
        self._progress = time.monotonic()  # when a request last started, finished or stepped aside
        self._watching = False  # one idle thread at a time watches for a stall

    def add_task(self, task: object) -> None:
        with self.lock:
            self.queue.append(task)
            # A busy runner takes the task itself when it is done: waking a thread
            # only to find the runner slot taken would cost the wake-up we avoid.
            if self.running < self.runners or not self._watching:
                self.queue_cv.notify()

    def handler_thread(self, thread_no: int) -> None:
        _current.dispatcher = self
        finished = False
        while True:
            with self.lock:
                if finished:
                    self.running -= 1
                    self._progress = time.monotonic()
                task = self._next_task(thread_no)
                if task is None:
                    return
                self.running += 1
                self._progress = time.monotonic()
            try:
                task.service()
            except BaseException:
                self.logger.exception("Exception when servicing %r", task)
            finished = True

    def _next_task(self, thread_no: int) -> object | None:
        """The next task for this thread, or None when it must exit. Holds ``self.lock``."""
        while True:
            if self.stop_count > 0:
                self.active_count -= 1
                self.stop_count -= 1
                self.threads.discard(thread_no)
                self.thread_exit_cv.notify()
                return None
            if self.queue and self.running < self.runners:
                return self.queue.popleft()
            self.active_count -= 1
            if self.queue and not self._watching:
                # Work is queued behind a busy runner: wake up now and then to see
                # whether it is stuck.
                self._watching = True
                self.queue_cv.wait(self.STALL_SECONDS)
                self._watching = False
                self.active_count += 1
                if self.queue and time.monotonic() - self._progress >= self.STALL_SECONDS:
                    return self.queue.popleft()  # the caller marks the start as progress
            else:
                self.queue_cv.wait()
                self.active_count += 1

    def step_aside(self) -> None:
        with self.lock:
            self.running -= 1
            self._progress = time.monotonic()
            if self.queue:
                self.queue_cv.notify()

    def step_back(self) -> None:
        with self.lock:
            # May exceed ``runners`` for a moment: the request finishes rather than queue again.
            self.running += 1
