"""Jobs and their events in a database (SQLAlchemy): SQLite by default, PostgreSQL to share.

Workers claim jobs atomically: on PostgreSQL with ``SELECT ... FOR UPDATE SKIP LOCKED`` (two
workers never wait on or take the same row), on SQLite inside a ``BEGIN IMMEDIATE``
transaction (one writer at a time). Every claim is also a conditional UPDATE checked by its
row count, so a claim that lost a race is never mistaken for a win.

Every event is announced once its transaction commits, for ``zoo.jobs.watch`` to wake the
streams that wait on the job: to the listeners in this process (``add_listener``, by database
URL, so a worker thread's store wakes the server's watchers) and, on PostgreSQL, to every
process with ``NOTIFY zoo_job_events, '<job id>'`` sent inside the same transaction.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    JSON,
    CursorResult,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    aliased,
    mapped_column,
    sessionmaker,
)

from zoo.errors import Cancelled, FailedPrecondition, InvalidArgument, NotFound
from zoo.jobs.records import EventType, Job, JobEvent, JobKind, JobState, transition

NOTIFY_CHANNEL = "zoo_job_events"
EventListener = Callable[[str], None]  # called with a job id, on the writer's thread
_listeners: dict[str, list[EventListener]] = {}  # by database URL: every store in the process
_listeners_lock = threading.Lock()


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class EventRow(Base):
    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("job_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    type: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands naive datetimes back; everything here is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def database_url(url_or_path: str | Path) -> str:
    """A SQLAlchemy URL: ``postgresql://`` uses psycopg 3; a plain path means SQLite."""
    text = str(url_or_path)
    if text.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + text.split("://", 1)[1]
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).resolve()}"


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        # pysqlite's own transaction handling is replaced so that every transaction starts
        # with BEGIN IMMEDIATE: the write lock is taken up front and claims cannot interleave.
        @event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            dbapi_connection.execute("PRAGMA foreign_keys=ON")

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


def _search_id(table: Any) -> Any:
    """SQL for a job's parent search (its params' ``search_id``); NULL for other jobs. A JSON
    field rather than a column: databases made before searches existed need no migration."""
    return table.params["search_id"].as_string()


def _trial_rows(trials: list[dict[str, Any]], start: dt.datetime) -> list[JobRow]:
    """Queued fine-tune rows for a search's trials, created a microsecond apart after
    ``start`` so that they list in trial order."""
    return [
        JobRow(
            id=uuid.uuid4().hex,
            kind=JobKind.FINETUNE.value,
            state=JobState.QUEUED.value,
            params=trial,
            created_at=start + dt.timedelta(microseconds=i + 1),
            updated_at=start,
            attempts=0,
        )
        for i, trial in enumerate(trials)
    ]


def _parent_id(params: dict[str, Any]) -> str | None:
    value = params.get("search_id")
    return str(value) if value is not None else None


def _job(row: JobRow) -> Job:
    return Job(
        id=row.id,
        kind=JobKind(row.kind),
        state=JobState(row.state),
        params=row.params,
        created_at=_aware(row.created_at) or now(),
        updated_at=_aware(row.updated_at) or now(),
        attempts=row.attempts,
        worker=row.worker,
        error=row.error,
        result=row.result,
        started_at=_aware(row.started_at),
        finished_at=_aware(row.finished_at),
    )


@dataclass(frozen=True)
class JobCensus:
    """What monitoring needs of the queue: jobs by state, and the longest silence of a worker
    on a job it holds (seconds; 0 when none is held)."""

    counts: dict[JobState, int]
    longest_silence_s: float


class JobStore:
    """Jobs and events behind one SQLAlchemy engine; safe to share between processes."""

    def __init__(self, url_or_path: str | Path) -> None:
        self.url = database_url(url_or_path)
        self.engine = _engine(self.url)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            touched: set[str] = session.info.setdefault("events_for", set())
            yield session
        for job_id in touched:  # committed: tell this process's watchers
            for listener in self._local_listeners():
                listener(job_id)

    def add_listener(self, listener: EventListener) -> Callable[[], None]:
        """Call ``listener(job_id)`` after any store of this database in this process commits
        an event; returns the function that removes it."""
        with _listeners_lock:
            _listeners.setdefault(self.url, []).append(listener)

        def remove() -> None:
            with _listeners_lock:
                _listeners.get(self.url, []).remove(listener)

        return remove

    def _local_listeners(self) -> list[EventListener]:
        with _listeners_lock:
            return list(_listeners.get(self.url, ()))

    def close(self) -> None:
        self.engine.dispose()

    # -- jobs ------------------------------------------------------------------------
    def create(self, kind: JobKind, params: dict[str, Any]) -> Job:
        stamp = now()
        row = JobRow(
            id=uuid.uuid4().hex,
            kind=kind.value,
            state=JobState.QUEUED.value,
            params=params,
            created_at=stamp,
            updated_at=stamp,
            attempts=0,
        )
        with self._session() as session:
            session.add(row)
            session.flush()
            self._add_event(session, row.id, EventType.STATE, {"state": JobState.QUEUED.value})
        return _job(row)

    def create_search(
        self, params: dict[str, Any], trials: Callable[[str], list[dict[str, Any]]]
    ) -> tuple[Job, list[Job]]:
        """A search job and its trials (fine-tune jobs, ``trials(parent_id)`` their params,
        each holding the parent's id under ``search_id``) in one transaction: all or none.
        Trials are queued in their order (claims take the oldest first)."""
        stamp = now()
        parent = JobRow(
            id=uuid.uuid4().hex,
            kind=JobKind.SEARCH.value,
            state=JobState.QUEUED.value,
            params=params,
            created_at=stamp,
            updated_at=stamp,
            attempts=0,
        )
        rows = _trial_rows(trials(parent.id), stamp)
        if any(_parent_id(row.params) != parent.id for row in rows):
            raise InvalidArgument("every trial of a search must name it as its search_id")
        with self._session() as session:
            for row in [parent, *rows]:
                session.add(row)
                session.flush()
                self._add_event(session, row.id, EventType.STATE, {"state": "QUEUED"})
        return _job(parent), [_job(r) for r in rows]

    def extend_search(
        self, parent_id: str, worker: str, params: dict[str, Any], trials: list[dict[str, Any]]
    ) -> list[Job]:
        """A search's next wave (tpe): its trials queued, its params (which list them)
        replaced, and the search let go by ``worker``, RUNNING and held by no one until the
        wave has ended; all in one transaction. Cancelled when the search no longer runs on
        ``worker`` (a cancel came meanwhile)."""
        with self._session() as session:
            parent = self._row(session, parent_id, lock=True)
            if parent.state != JobState.RUNNING.value or parent.worker != worker:
                raise Cancelled(f"search {parent_id} is {parent.state}; no more trials")
            known = session.scalar(
                select(func.max(JobRow.created_at)).where(_search_id(JobRow) == parent_id)
            )
            start = max(now(), _aware(known) or now())
            rows = _trial_rows(trials, start)
            if any(_parent_id(row.params) != parent_id for row in rows):
                raise InvalidArgument("every trial of a search must name it as its search_id")
            for row in rows:
                session.add(row)
                session.flush()
                self._add_event(session, row.id, EventType.STATE, {"state": "QUEUED"})
            parent.params = params
            parent.worker = None
            parent.heartbeat_at = None
            parent.updated_at = now()
            self._add_event(
                session, parent_id, EventType.LOG,
                {"message": f"{len(rows)} more trials queued; {worker} lets the search go"},
            )  # fmt: skip
            return [_job(r) for r in rows]

    def children(self, parent_id: str) -> list[Job]:
        """A search's trials, oldest first."""
        with self._session() as session:
            rows = session.scalars(
                select(JobRow).where(_search_id(JobRow) == parent_id).order_by(JobRow.created_at)
            )
            return [_job(r) for r in rows]

    def get(self, job_id: str) -> Job:
        with self._session() as session:
            return _job(self._row(session, job_id))

    @staticmethod
    def _row(session: Session, job_id: str, lock: bool = False) -> JobRow:
        query = select(JobRow).where(JobRow.id == job_id)
        if lock:
            query = query.with_for_update()
        row = session.scalars(query).first()
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        return row

    def jobs(self, state: JobState | None = None, limit: int = 100) -> list[Job]:
        if limit < 1:
            raise InvalidArgument(f"limit must be >= 1; received {limit}")
        query = select(JobRow).order_by(JobRow.created_at.desc()).limit(limit)
        if state is not None:
            query = query.where(JobRow.state == state.value)
        with self._session() as session:
            return [_job(r) for r in session.scalars(query)]

    def census(self) -> JobCensus:
        held = (JobState.RUNNING.value, JobState.CANCELLING.value)
        with self._session() as session:
            rows = session.execute(select(JobRow.state, func.count()).group_by(JobRow.state))
            counts = {JobState(state): int(n) for state, n in rows}
            oldest = _aware(
                session.scalar(select(func.min(JobRow.heartbeat_at)).where(JobRow.state.in_(held)))
            )
        silence = (now() - oldest).total_seconds() if oldest else 0.0
        return JobCensus({s: counts.get(s, 0) for s in JobState}, max(0.0, silence))

    def claim(self, worker: str, stale_after_s: float = 60.0) -> Job | None:
        """Take the oldest queued job, or a running one whose worker stopped beating.

        Returns the job now RUNNING for ``worker``, or None when there is nothing to do.
        """
        stamp = now()
        stale = stamp - dt.timedelta(seconds=stale_after_s)
        with self._session() as session:
            for row in self._candidates(session, stale):
                previous = JobState(row.state)
                if previous is JobState.RUNNING:  # its worker died: back to the queue first
                    transition(previous, JobState.QUEUED)
                still_claimable = (
                    (JobRow.state == JobState.QUEUED.value)
                    | (JobRow.heartbeat_at < stale)
                    | JobRow.worker.is_(None)  # a search whose trials have ended
                )
                done = session.execute(
                    update(JobRow)
                    .where(JobRow.id == row.id, JobRow.state == row.state, still_claimable)
                    .values(
                        state=JobState.RUNNING.value,
                        worker=worker,
                        attempts=JobRow.attempts + 1,
                        heartbeat_at=stamp,
                        updated_at=stamp,
                        started_at=func.coalesce(JobRow.started_at, stamp),
                    )
                    .execution_options(synchronize_session=False)
                )
                if cast(CursorResult[Any], done).rowcount != 1:
                    continue  # another worker got there first
                parent = _parent_id(row.params)
                if parent is not None:
                    self._start_search(session, parent, stamp)
                if previous is JobState.RUNNING and row.worker is not None:
                    self._add_event(
                        session,
                        row.id,
                        EventType.LOG,
                        {"message": f"worker {row.worker} stopped; resuming on {worker}"},
                    )
                self._add_event(
                    session, row.id, EventType.STATE, {"state": "RUNNING", "worker": worker}
                )
                session.flush()
                session.expire(row)
                return _job(self._row(session, row.id))
        return None

    def _start_search(self, session: Session, parent_id: str, stamp: dt.datetime) -> None:
        """A search becomes RUNNING, held by no worker, when its first trial starts."""
        done = session.execute(
            update(JobRow)
            .where(JobRow.id == parent_id, JobRow.state == JobState.QUEUED.value)
            .values(state=JobState.RUNNING.value, updated_at=stamp, started_at=stamp)
            .execution_options(synchronize_session=False)
        )
        if cast(CursorResult[Any], done).rowcount == 1:
            self._add_event(session, parent_id, EventType.STATE, {"state": "RUNNING"})

    @staticmethod
    def _candidates(session: Session, stale: dt.datetime) -> list[JobRow]:
        search = JobRow.kind == JobKind.SEARCH.value
        queued = (JobRow.state == JobState.QUEUED.value) & ~search
        orphaned = (JobRow.state == JobState.RUNNING.value) & (JobRow.heartbeat_at < stale)
        # A search is work for a worker only once its trials have ended: then one claims it
        # to build its table and promote the best trial (a worker dying meanwhile leaves it
        # orphaned, as any job).
        trial = aliased(JobRow)
        trials_ended = ~exists().where(
            _search_id(trial) == JobRow.id,
            trial.state.not_in([s.value for s in JobState if s.terminal]),
        )
        waiting = (JobRow.state == JobState.QUEUED.value) | (  # queued, or handed back
            (JobRow.state == JobState.RUNNING.value) & JobRow.worker.is_(None)
        )
        settled = search & waiting & trials_ended
        query = (
            select(JobRow)
            .where(queued | orphaned | settled)
            .order_by(JobRow.created_at)
            .limit(5)
            .with_for_update(skip_locked=True)
        )
        return list(session.scalars(query))

    def heartbeat(self, job_id: str, worker: str) -> JobState:
        """Record that ``worker`` is alive on the job; returns the job's state (CANCELLING?)."""
        with self._session() as session:
            row = self._row(session, job_id, lock=True)
            if row.worker == worker and row.state in ("RUNNING", "CANCELLING"):
                row.heartbeat_at = now()
            return JobState(row.state)

    def set_state(
        self,
        job_id: str,
        target: JobState,
        *,
        error: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> Job:
        """Move a job to ``target`` if its state machine allows it, recording an event."""
        with self._session() as session:
            row = self._row(session, job_id, lock=True)
            transition(JobState(row.state), target)
            stamp = now()
            row.state = target.value
            row.updated_at = stamp
            if target.terminal:
                row.finished_at = stamp
            if error is not None:
                row.error = error
            if result is not None:
                row.result = result
            payload: dict[str, Any] = {"state": target.value}
            if error is not None:
                payload["error"] = error
            self._add_event(session, job_id, EventType.STATE, payload)
            session.flush()
            return _job(row)

    def request_cancel(self, job_id: str) -> Job:
        """QUEUED ends CANCELLED at once; RUNNING becomes CANCELLING for its worker to see."""
        job = self.get(job_id)
        if job.state.terminal:
            raise FailedPrecondition(f"job {job_id} has already ended ({job.state})")
        if job.state is JobState.CANCELLING:
            return job
        target = JobState.CANCELLED if job.state is JobState.QUEUED else JobState.CANCELLING
        return self.set_state(job_id, target)

    # -- events ----------------------------------------------------------------------
    def add_event(self, job_id: str, type: EventType, payload: dict[str, Any]) -> int:
        # Every writer of a job's events holds its row (this lock, set_state's, claim's
        # UPDATE), so two never pick the same next seq. Retrying on the unique (job_id, seq)
        # instead gave up under six writers on PostgreSQL (tests/test_jobs.py).
        with self._session() as session:
            self._row(session, job_id, lock=True)
            return self._add_event(session, job_id, type, payload)

    @staticmethod
    def _add_event(session: Session, job_id: str, type: EventType, payload: dict[str, Any]) -> int:
        last = session.scalar(select(func.max(EventRow.seq)).where(EventRow.job_id == job_id))
        seq = (last or 0) + 1
        session.add(EventRow(job_id=job_id, seq=seq, time=now(), type=type.value, payload=payload))
        session.flush()
        session.info.setdefault("events_for", set()).add(job_id)
        if session.get_bind().dialect.name == "postgresql":  # delivered when this commits
            session.execute(select(func.pg_notify(NOTIFY_CHANNEL, job_id)))
        return seq

    def latest_events(self, job_ids: list[str]) -> dict[str, int]:
        """The newest event number of each job (jobs without events are left out)."""
        if not job_ids:
            return {}
        with self._session() as session:
            rows = session.execute(
                select(EventRow.job_id, func.max(EventRow.seq))
                .where(EventRow.job_id.in_(job_ids))
                .group_by(EventRow.job_id)
            )
            return {job_id: int(seq) for job_id, seq in rows}

    def events(self, job_id: str, after: int = 0) -> list[JobEvent]:
        with self._session() as session:
            self._row(session, job_id)
            rows = session.scalars(
                select(EventRow)
                .where(EventRow.job_id == job_id, EventRow.seq > after)
                .order_by(EventRow.seq)
            )
            return [
                JobEvent(r.job_id, r.seq, _aware(r.time) or now(), EventType(r.type), r.payload)
                for r in rows
            ]
