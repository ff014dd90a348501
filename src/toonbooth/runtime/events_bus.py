"""In-process live event bus: runners publish each job event, subscribers (SSE, WebSocket, `wait`)
receive it at once, from threads or from an asyncio loop (woken with `call_soon_threadsafe`).

Items are `(seq, event, stored)`. Stored events carry their seq in the job's event log; live-only
events (throttled progress, previews) carry the seq of the last stored event before them, so a
client that resumes "after seq N" misses nothing that was stored. The bus is a fast path: consumers
re-read the durable log when idle, so events written by another process still arrive.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Iterator
from typing import NamedTuple

from ..core.events import JobEvent


class BusItem(NamedTuple):
    seq: int
    event: JobEvent
    stored: bool


class Subscription:
    """A bounded inbox of one subscriber. When it overflows, `overflowed` tells the reader to replay."""

    def __init__(self, maxlen: int = 4096):
        self._items: collections.deque[BusItem] = collections.deque()
        self._maxlen = maxlen
        self._cond = threading.Condition()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self.overflowed = False

    def push(self, item: BusItem) -> None:
        with self._cond:
            if len(self._items) >= self._maxlen:
                self._items.popleft()
                self.overflowed = True
            self._items.append(item)
            self._cond.notify_all()
            waiters = list(self._waiters)
        for loop, ev in waiters:
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                loop.call_soon_threadsafe(ev.set)

    def get(self, timeout: float | None) -> BusItem | None:
        """Next item, waiting up to `timeout` seconds; None on timeout."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    async def aget(self, timeout: float | None) -> BusItem | None:
        loop = asyncio.get_running_loop()
        ev = asyncio.Event()
        with self._cond:
            if self._items:
                return self._items.popleft()
            entry = (loop, ev)
            self._waiters.append(entry)
        try:
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(ev.wait(), timeout)
        finally:
            with self._cond:
                if entry in self._waiters:
                    self._waiters.remove(entry)
        with self._cond:
            return self._items.popleft() if self._items else None


class EventBus:
    def __init__(self) -> None:
        self._subs: dict[str, list[Subscription]] = {}
        self._lock = threading.Lock()

    def publish(self, job_id: str, seq: int, event: JobEvent, stored: bool = True) -> None:
        with self._lock:
            subs = list(self._subs.get(job_id, ()))
        item = BusItem(seq, event, stored)
        for sub in subs:
            sub.push(item)

    @contextlib.contextmanager
    def subscribe(self, job_id: str) -> Iterator[Subscription]:
        sub = Subscription()
        with self._lock:
            self._subs.setdefault(job_id, []).append(sub)
        try:
            yield sub
        finally:
            with self._lock:
                subs = self._subs.get(job_id, [])
                if sub in subs:
                    subs.remove(sub)
                if not subs:
                    self._subs.pop(job_id, None)

    def subscribers(self, job_id: str) -> int:
        with self._lock:
            return len(self._subs.get(job_id, ()))
