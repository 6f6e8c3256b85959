"""Job event streams that wait on notifications, not on the database.

A server has one ``EventHub``. A stream (WatchJob over gRPC, server-sent events over HTTP)
reads the job's new events, then waits on the hub until the job has another one. The hub is
woken three ways:

- by this process's own writes (the servicers, worker threads): ``JobStore.add_listener``;
- on PostgreSQL, by ``LISTEN zoo_job_events`` on one connection of its own (a thread), which
  hears every process's writes (job processes report progress straight to the database);
- on SQLite, which has no notifications, by one poll of the newest event number of the jobs
  being watched, once per ``poll_s`` for the whole server, however many streams wait.

A stream also re-reads after ``max_wait_s`` without news, so a lost notification (the listen
connection reconnecting) delays an event, never loses it. Reads run on the ``io`` executor,
never on the event loop that serves inference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor

from zoo.errors import Unavailable
from zoo.jobs.records import JobEvent
from zoo.jobs.store import NOTIFY_CHANNEL, JobStore

log = logging.getLogger("zoo.jobs.watch")

# (job id, after) -> (has the job ended?, its events after ``after``); reads the state first,
# so that a job seen ended has all its events in the same answer.
ReadEvents = Callable[[str, int], tuple[bool, list[JobEvent]]]


class EventHub:
    """Wakes the streams waiting on a job when it gets an event; create in a running loop."""

    def __init__(
        self, store: JobStore, io: Executor, *, poll_s: float = 1.0, max_wait_s: float = 30.0
    ) -> None:
        self.store = store
        self.io = io
        self.poll_s = poll_s
        self.max_wait_s = max_wait_s
        self._loop = asyncio.get_running_loop()
        self._versions: defaultdict[str, int] = defaultdict(int)  # wakes per job, ever
        self._waiting: dict[str, dict[asyncio.Event, int]] = {}  # job -> {waiter: after}
        self._remove_listener = store.add_listener(self._wake_threadsafe)
        self._stop = threading.Event()
        self._poller: asyncio.Task[None] | None = None
        self._listener: threading.Thread | None = None
        if store.dialect == "postgresql":
            self._listener = threading.Thread(target=self._listen, name="jobs-listen", daemon=True)
            self._listener.start()
        else:
            self._poller = self._loop.create_task(self._poll())

    async def close(self) -> None:
        """End every stream (UNAVAILABLE: the server is stopping) and stop listening."""
        self._remove_listener()
        self._stop.set()
        self._wake_all()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._listener is not None:
            await asyncio.to_thread(self._listener.join, 5)

    @property
    def watchers(self) -> int:
        return sum(len(w) for w in self._waiting.values())

    # -- streams -------------------------------------------------------------------
    async def watch(self, job_id: str, after: int, read: ReadEvents) -> AsyncIterator[JobEvent]:
        """The job's events after ``after`` as they come; ends after the job has ended."""
        loop = asyncio.get_running_loop()
        while True:
            version = self._versions[job_id]  # before the read: a wake after it is not lost
            ended, events = await loop.run_in_executor(self.io, read, job_id, after)
            for event in events:
                yield event
                after = event.seq
            if ended:
                return
            if self._stop.is_set():
                raise Unavailable(
                    f"the server is stopping; watch job {job_id} again after event {after}"
                )
            await self._wait(job_id, after, version)

    async def _wait(self, job_id: str, after: int, version: int) -> None:
        if self._versions[job_id] != version:
            return
        woken = asyncio.Event()
        self._waiting.setdefault(job_id, {})[woken] = after
        try:
            await asyncio.wait_for(woken.wait(), self.max_wait_s)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiting.get(job_id, {})
            waiters.pop(woken, None)
            if not waiters:
                self._waiting.pop(job_id, None)

    def wake(self, job_id: str) -> None:
        """The job has a new event; call on the loop."""
        self._versions[job_id] += 1
        for woken in self._waiting.get(job_id, {}):
            woken.set()

    def _wake_all(self) -> None:
        for job_id in list(self._waiting):
            self.wake(job_id)

    def _wake_threadsafe(self, job_id: str) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            self._loop.call_soon_threadsafe(self.wake, job_id)

    # -- SQLite: one poll for every waiting stream ---------------------------------
    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.poll_s)
            if not self._waiting:
                continue
            watched = {job: min(w.values()) for job, w in self._waiting.items() if w}
            try:
                latest = await loop.run_in_executor(
                    self.io, self.store.latest_events, list(watched)
                )
            except Exception as e:  # the database is away: the streams' own re-reads cover it
                log.warning("polling job events failed: %s", e)
                continue
            for job_id, seq in latest.items():
                if seq > watched.get(job_id, seq):
                    self.wake(job_id)

    # -- PostgreSQL: LISTEN on a connection of its own -----------------------------
    def _listen(self) -> None:
        import psycopg

        conninfo = self.store.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        delay = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    delay = 0.5
                    self._wake_all_threadsafe()  # anything written while not listening
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._wake_threadsafe(note.payload)
            except Exception as e:  # a dropped connection: listen again, a little later
                log.warning("listening for job events failed (%s); retrying in %.1f s", e, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)

    def _wake_all_threadsafe(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wake_all)
