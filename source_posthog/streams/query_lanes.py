"""Up to two HogQL queries in flight for one read, and nothing left running when the read ends.

PostHog runs at most three API queries at once per project (docs/posthog-api.md § 11.2); the
events read uses two: the page being read, and the first page of the next window, which does not
depend on it, sent ahead. `QueryLanes` is a context manager that lives exactly as long as one
project's read (`with QueryLanes(...) as lanes:` in streams/events.py):

- each lane is a daemon thread with its own HTTP client (the same budget and retry policy), so a
  read that fails or is abandoned never waits for a lane: leaving the `with` cancels what was
  queued, and a lane still sending stops at its next attempt (`http.Cancelled`); the process never
  waits for it either;
- answers are read in order, so records and checkpoints stay in order;
- memory: a page's body is read off the socket only while the lanes' `permit` is free, and the
  reader holds the permit while it decodes a page. A page's bytes and its decoded rows are each
  ~40-70 MB; with the permit, one read holds at most one of each at a time, plus the rows being
  emitted. The permit belongs to this read (not to the process): other streams never wait on it.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, Dict, Optional, Tuple

import requests

from source_posthog.http import PostHogClient

Answer = Tuple[requests.Response, bytes]


class QueryLanes:
    def __init__(self, new_client: Callable[..., PostHogClient], send: Callable[[PostHogClient, Any], Answer], in_flight: int, name: str = "posthog-query"):
        self._new_client, self._send = new_client, send
        self._in_flight = in_flight
        self._name = name
        self._sends_ahead = in_flight > 1
        self._ahead: Dict[Any, Future] = {}
        self.permit = threading.Lock()
        self.cancelled = threading.Event()
        self._jobs: "queue.SimpleQueue[Optional[Tuple[Future, Any]]]" = queue.SimpleQueue()

    def __enter__(self) -> "QueryLanes":
        for number in range(self._in_flight):
            threading.Thread(target=self._lane, name=f"{self._name}-{number + 1}", daemon=True).start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.cancelled.set()
        for future in self._ahead.values():
            future.cancel()
        self._ahead.clear()
        for _ in range(self._in_flight):
            self._jobs.put(None)

    def _lane(self) -> None:
        client = self._new_client(permit=self.permit, cancelled=self.cancelled)
        while True:
            job = self._jobs.get()
            if job is None or self.cancelled.is_set():
                return
            future, query = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._send(client, query))
            except BaseException as error:  # handed to the reader, who raises it
                future.set_exception(error)

    def _submit(self, query: Any) -> Future:
        future: Future = Future()
        self._jobs.put((future, query))
        return future

    def read(self, query: Any, following: Optional[Any] = None) -> Answer:
        """The answer to `query`, with `following` sent ahead meanwhile. A query sent ahead that
        the plan no longer asks for (a window split after a timeout) is dropped: cancelled if not
        yet sent, else its answer is discarded."""
        following = following if self._sends_ahead else None
        current = self._ahead.pop(query, None) or self._submit(query)
        for key, future in list(self._ahead.items()):
            if key != following:
                future.cancel()
                del self._ahead[key]
        if following is not None and following not in self._ahead:
            self._ahead[following] = self._submit(following)
        return current.result()
