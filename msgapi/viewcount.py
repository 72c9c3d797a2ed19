"""Group commit for views on PostgreSQL: the views that arrive while one view statement runs
are counted together by the next, in one statement and one commit.

Every GET of a message is a write, and on PostgreSQL each write waits for its own commit
(and, on one hot row, for the previous writer's row lock). Here the first reader to find
no statement in flight runs one at once (a lone reader pays nothing); readers that arrive
meanwhile queue, and when the statement has committed one of them runs the next, for all
of them: ``views = views + k`` per message, in one ``UPDATE``. Each of the k readers of a
message is answered with its own count, ``views - k + 1`` up to ``views``, rendered by the
database like every other message response. Nothing is answered before its commit, and
an error fails exactly the readers of that statement (none of their views was counted).

Exact across processes: each statement is atomic and adds its k to whatever the row holds.
Rows are locked in id order, so two processes batching overlapping messages cannot
deadlock. Per process by nature (it holds only who is waiting right now).

SQLite does not use it: there the dispatcher runs one request at a time, so no reader
ever arrives while a view statement runs and batching would be pure overhead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

# Rows of a batch: (message id, the message as one view left it), k rows per message in count order.
RunBatch = Callable[[Sequence[int], Sequence[int]], Sequence[tuple[int, Any]]]


class _Reader:
    """One request waiting for its view to be counted."""

    __slots__ = ("done", "error", "leads", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.leads = False  # woken to run the next statement rather than with a result


class ViewBatcher:
    """Counts views through ``run_batch(ids, counts)``, one statement in flight at a time."""

    def __init__(self, run_batch: RunBatch) -> None:
        self._run_batch = run_batch
        self._lock = threading.Lock()
        self._waiting: dict[int, list[_Reader]] = {}
        self._running = False
        self.statements = 0  # view statements run; with ``views`` it shows the batching
        self.views = 0

    def count_view(self, message_id: int) -> Any:
        """Count one view of ``message_id``; the message as this view left it, or None if it is gone."""
        reader = _Reader()
        with self._lock:
            self._waiting.setdefault(message_id, []).append(reader)
            leads = not self._running
            self._running = True
        if not leads:
            reader.done.wait()
            leads = reader.leads
        if leads:
            self._lead()
        if reader.error is not None:
            raise reader.error
        return reader.result

    def _lead(self) -> None:
        """Run one statement for everyone waiting, answer them, and hand the lead on."""
        with self._lock:
            batch, self._waiting = self._waiting, {}
        ids = sorted(batch)
        try:
            rows = self._run_batch(ids, [len(batch[message_id]) for message_id in ids])
        except BaseException as error:
            for readers in batch.values():
                for reader in readers:
                    reader.error = error
        else:
            answers: dict[int, list[Any]] = {}
            for message_id, text in rows:
                answers.setdefault(message_id, []).append(text)
            for message_id, readers in batch.items():
                texts = answers.get(message_id)
                for position, reader in enumerate(readers):
                    # A deleted message answers every one of its readers None.
                    reader.result = texts[position] if texts else None
            self.statements += 1
            self.views += sum(len(readers) for readers in batch.values())
        with self._lock:
            successor = next(iter(self._waiting.values()), [None])[0]
            if successor is None:
                self._running = False
            else:
                successor.leads = True
        # Everyone this statement answered, then the next leader (whose own view is in the next batch).
        for readers in batch.values():
            for reader in readers:
                reader.done.set()
        if successor is not None:
            successor.done.set()

    def snapshot(self) -> dict[str, int]:
        """Statements run and views counted so far, and readers queued for the next statement now."""
        with self._lock:
            waiting = sum(len(readers) for readers in self._waiting.values())
        return {"statements": self.statements, "views": self.views, "waiting": waiting}
