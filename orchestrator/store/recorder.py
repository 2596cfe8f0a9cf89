"""The batched writer of the audit record (design §2 step 5, §6).

`record()` only appends to an in-memory queue, so the relay never waits for the database. One
writer task takes up to `batch_size` rows (or what arrived within `flush_interval_s`) and writes
them in ONE transaction: Core `insert()` executemany per table in foreign-key order, then the
conversation updates. Inserts ignore rows already present (unique keys), and the counters are
recomputed from the child rows, so replaying a batch never duplicates anything.

A database outage keeps the batch in hand and retries it with backoff: rows are delayed, never
dropped. Meanwhile the queue is bounded: past `max_queue` rows, its oldest rows spill to a
`Journal` file (`journal.py`), which is drained before the queue once the database is back, so
the write order holds; what is still unwritten when the close grace runs out is journaled too,
and a journal found at start is replayed first. Only a row that can never be written (the
database rejects it for itself, or it cannot be bound) is given up, after the batch has been
retried one row at a time, and it is logged in full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, assert_never, cast

from sqlalchemy import ColumnElement, Insert, Update, bindparam, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, DisconnectionError, IntegrityError
from sqlalchemy.exc import TimeoutError as SqlTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator.store.journal import Journal
from orchestrator.store.records import (
    ConversationEnded,
    ConversationStarted,
    HandoffRecorded,
    ItemRecorded,
    Record,
    ResponseRecorded,
    ToolCallRecorded,
    fields_of,
)
from orchestrator.store.tables import Base, Conversation, Handoff, Item, Response, ToolCall

logger = logging.getLogger(__name__)

Params = dict[str, Any]
SPILL_RETRY_S = 5.0  # after the journal file could not be written


@dataclass(slots=True)
class BatchPlan:
    """The rows of one batch, grouped the way they are written."""

    conversations: list[Params] = field(default_factory=list[Params])
    items: list[Params] = field(default_factory=list[Params])
    tool_calls: list[Params] = field(default_factory=list[Params])
    responses: list[Params] = field(default_factory=list[Params])
    handoffs: list[Params] = field(default_factory=list[Params])
    ended: list[Params] = field(default_factory=list[Params])
    # Last known agent per conversation, in record order (handoffs, then an explicit end value).
    current_agent: dict[str, str] = field(default_factory=dict[str, str])
    # Conversations whose children changed: their counters and token totals are recomputed.
    touched: set[str] = field(default_factory=set[str])


def plan_batch(rows: Sequence[Record]) -> BatchPlan:
    """Group records into per-table parameter lists."""
    plan = BatchPlan()
    for row in rows:
        match row:
            case ConversationStarted():
                plan.conversations.append(_conversation_params(row))
            case ConversationEnded():
                plan.ended.append(_ended_params(row))
                if row.current_agent is not None:
                    plan.current_agent[row.conversation_id] = row.current_agent
            case ItemRecorded():
                plan.items.append(fields_of(row))  # the columns are the record's fields
            case ToolCallRecorded():
                plan.tool_calls.append(fields_of(row))
            case ResponseRecorded():
                plan.responses.append(_response_params(row))
            case HandoffRecorded():
                plan.handoffs.append(fields_of(row))
                plan.current_agent[row.conversation_id] = row.to_agent
            case _:
                assert_never(row)
        if not isinstance(row, ConversationStarted | ConversationEnded):
            plan.touched.add(row.conversation_id)
    return plan


def _conversation_params(row: ConversationStarted) -> Params:
    return {
        "id": row.conversation_id, "agent": row.agent, "agent_version": row.agent_version,
        "current_agent": row.agent, "status": "active", "started_at": row.started_at,
        "client": dict(row.client),
    }


def _ended_params(row: ConversationEnded) -> Params:
    return {
        "b_id": row.conversation_id, "b_status": row.status, "b_ended_at": row.ended_at,
        "b_end_reason": row.end_reason,
    }


def _response_params(row: ResponseRecorded) -> Params:
    usage = row.usage or {}
    return {
        "conversation_id": row.conversation_id, "response_id": row.response_id,
        "agent": row.agent, "status": row.status, "usage": row.usage,
        "input_tokens": _tokens(usage, "input_tokens"),
        "output_tokens": _tokens(usage, "output_tokens"),
        "total_tokens": _tokens(usage, "total_tokens"),
        "first_output_latency_ms": row.first_output_latency_ms,
        "created_at": row.created_at, "done_at": row.done_at,
        **_modality_params(usage),
    }


def _modality_params(usage: dict[str, Any]) -> Params:
    # usage.input_token_details / output_token_details carry text_tokens and audio_tokens.
    params: Params = {}
    for side in ("input", "output"):
        raw = usage.get(f"{side}_token_details")
        details: dict[str, Any] = (
            cast(dict[str, Any], raw) if isinstance(raw, dict) else {}
        )
        for modality in ("text", "audio"):
            params[f"{side}_{modality}_tokens"] = _tokens(details, f"{modality}_tokens")
    return params


def _tokens(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _count(model: type[Item | ToolCall | Handoff | Response], *where: ColumnElement[bool]) -> Any:
    return (
        select(func.count())
        .where(model.conversation_id == Conversation.id, *where)
        .scalar_subquery()
    )


def _token_sum(column: Any) -> Any:
    return (
        select(func.coalesce(func.sum(column), 0))
        .where(Response.conversation_id == Conversation.id)
        .scalar_subquery()
    )


def _recount(conversation_ids: set[str]) -> Update:
    # Recomputed, not incremented: a batch replayed after an ambiguous commit stays exact.
    return (
        update(Conversation)
        .where(Conversation.id.in_(sorted(conversation_ids)))
        .values(
            item_count=_count(Item),
            tool_call_count=_count(ToolCall),
            handoff_count=_count(Handoff),
            response_count=_count(Response),
            error_count=_count(ToolCall, ToolCall.status == "failed")
            + _count(Response, Response.status == "failed"),
            input_tokens=_token_sum(Response.input_tokens),
            output_tokens=_token_sum(Response.output_tokens),
            total_tokens=_token_sum(Response.total_tokens),
        )
    )


_END = (
    update(Conversation)
    .where(Conversation.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"), ended_at=bindparam("b_ended_at"),
        end_reason=bindparam("b_end_reason"),
    )
)
_CURRENT_AGENT = (
    update(Conversation)
    .where(Conversation.id == bindparam("b_id"))
    .values(current_agent=bindparam("b_agent"))
)


def insert_ignoring_duplicates(dialect_name: str) -> Callable[[type[Base]], Insert]:
    """`INSERT … ON CONFLICT DO NOTHING` per recorded table, for the engine's dialect."""
    if dialect_name not in ("postgresql", "sqlite"):
        raise ValueError(f"unsupported database dialect: {dialect_name}")
    insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    # Built once: statement construction and cache-key generation stay off the per-batch path.
    statements: dict[type[Base], Insert] = {
        model: insert(model).on_conflict_do_nothing()
        for model in (Conversation, Item, ToolCall, Response, Handoff)
    }
    return statements.__getitem__


async def write_plan(
    connection: AsyncConnection, plan: BatchPlan, insert: Callable[[type[Base]], Insert]
) -> None:
    """Execute one plan on a connection inside the caller's transaction, parents first."""
    inserts: tuple[tuple[type[Base], list[Params]], ...] = (
        (Conversation, plan.conversations), (Item, plan.items), (ToolCall, plan.tool_calls),
        (Response, plan.responses), (Handoff, plan.handoffs),
    )
    for model, params in inserts:
        if params:
            await connection.execute(insert(model), params)
    if plan.items and connection.dialect.name == "sqlite":
        await connection.execute(_INDEX_ITEM_TEXT)
    if plan.current_agent:
        agents = [{"b_id": cid, "b_agent": name} for cid, name in plan.current_agent.items()]
        await connection.execute(_CURRENT_AGENT, agents)
    if plan.ended:
        await connection.execute(_END, plan.ended)
    if plan.touched:
        await connection.execute(_recount(plan.touched))


# Search indexing, one statement per batch (migration 0003): the items past the largest id the
# index holds (`items_fts_docsize` has a row per indexed item) are this batch's. Ids only grow,
# an indexed item leaves the index only when its text is erased, and a replayed batch inserts
# no item, so nothing is indexed twice.
_INDEX_ITEM_TEXT = text(
    "INSERT INTO items_fts(rowid, text) SELECT id, text FROM items "
    "WHERE id > (SELECT coalesce(max(id), 0) FROM items_fts_docsize) AND text IS NOT NULL"
)


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying cannot help: the database rejects the rows, or they cannot be bound.

    Outages are transient: driver errors (connection refused or lost, locked, missing table
    before migrations), socket errors and timeouts.
    """
    if isinstance(exc, IntegrityError | DataError):
        return True
    transient = DBAPIError | DisconnectionError | SqlTimeoutError | OSError | TimeoutError
    return not isinstance(exc, transient)


class SqlRecorder:
    """The `Recorder` of the service: a queue drained by one batching writer task, bounded by
    spilling to a journal file during outages."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_size: int = 1000,
        flush_interval_s: float = 0.2,
        close_grace_s: float = 10.0,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
        journal: Journal | None = None,
        max_queue: int = 100_000,
        write_timeout_s: float = 30.0,
    ) -> None:
        self._engine = engine
        self._insert = insert_ignoring_duplicates(engine.dialect.name)
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._close_grace_s = close_grace_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._queue: deque[Record] = deque()
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._enqueued = 0
        self._taken = 0
        self._flush_target = 0
        self._written = 0
        self._batches = 0
        self._dropped = 0
        self._last_error: BaseException | None = None
        self._journal = journal
        self._write_timeout_s = write_timeout_s
        self._max_queue = max(max_queue, batch_size)
        self._spill = asyncio.Event()  # the queue passed its bound
        self._order = asyncio.Lock()  # journal file and queue head: spiller vs. writer
        self._in_hand: list[Record] = []  # the batch being written
        self._in_hand_journaled = False  # ... and whether it came from the journal

    # --- the session's side: never blocks ---------------------------------------------------

    def record(self, row: Record) -> None:
        """Enqueue one record; returns at once whatever the database is doing."""
        if self._closing and self._task is None:
            logger.warning("record after the recorder closed; it will not be written: %r", row)
        self._queue.append(row)
        self._enqueued += 1
        depth = len(self._queue)
        # Wake the writer for the first row of a batch and when a batch is full; not per row.
        if depth == 1 or depth >= self._batch_size:
            self._wakeup.set()
        if depth > self._max_queue:
            self._spill.set()

    @property
    def queue_depth(self) -> int:
        """Rows recorded and not written yet (queued or in the batch being written)."""
        return self._enqueued - self._written - self._dropped

    @property
    def rows_written(self) -> int:
        """Rows committed to the database since start."""
        return self._written

    @property
    def batches_written(self) -> int:
        """Transactions committed since start (a batch split after a rejection counts per row)."""
        return self._batches

    @property
    def rows_dropped(self) -> int:
        """Rows the database rejected for themselves (logged); 0 in a healthy system."""
        return self._dropped

    @property
    def rows_journaled(self) -> int:
        """Rows this process spilled to the journal file (0 without an outage)."""
        return self._journal.appended if self._journal is not None else 0

    @property
    def journal_depth(self) -> int:
        """Rows in the journal file not written yet."""
        return self._journal.pending if self._journal is not None else 0

    @property
    def last_error(self) -> BaseException | None:
        """The error of the last failed write, None once a write succeeds again."""
        return self._last_error

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Launch the writer task."""
        if self._task is not None:
            return
        self._closing = False
        if self._journal is not None:
            left = await asyncio.to_thread(self._journal.load)
            if left:
                logger.warning("recorder: replaying %d rows journaled by an earlier run", left)
                self._enqueued += left
        self._task = asyncio.create_task(self._run(), name="sql-recorder")

    async def flush(self) -> None:
        """Wait until every row recorded before this call is written (or given up)."""
        if self._task is None:
            raise RuntimeError("the recorder is not running")
        target = self._enqueued
        self._flush_target = max(self._flush_target, target)
        self._wakeup.set()
        async with self._progress:
            await self._progress.wait_for(lambda: self._done >= target)

    async def aclose(self) -> None:
        """Write everything still queued, within the close grace; then stop the writer."""
        task = self._task
        if task is None:
            if self._queue:
                logger.error("recorder closed without being started: %d rows unwritten",
                             len(self._queue))
            return
        self._closing = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), self._close_grace_s)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if await self._journal_the_rest():
                return
            logger.error(
                "recorder closed after %.1fs with %d rows unwritten (last error: %r)",
                self._close_grace_s, self.queue_depth, self._last_error,
            )
        finally:
            self._task = None

    # --- the writer -------------------------------------------------------------------------

    @property
    def _done(self) -> int:
        return self._written + self._dropped

    async def _run(self) -> None:
        spiller = asyncio.create_task(self._spiller(), name="sql-recorder-spill")
        try:
            while True:
                batch, offset = await self._take()
                if not batch:
                    return
                await self._deliver(batch)
                if offset is not None and self._journal is not None:
                    async with self._order:
                        await asyncio.to_thread(self._journal.consume, offset, len(batch))
                self._in_hand = []
                async with self._progress:
                    self._progress.notify_all()
        finally:
            async with self._order:  # never cut a spill in half
                spiller.cancel()

    async def _take(self) -> tuple[list[Record], int | None]:
        """The next batch, from the journal while it holds rows (they are the oldest), else
        from the queue; with the journal offset to consume once it is written."""
        journal = self._journal
        while True:
            if journal is not None:
                async with self._order:
                    if journal.pending:
                        skipped = journal.skipped
                        batch, offset = await asyncio.to_thread(journal.peek, self._batch_size)
                        self._dropped += journal.skipped - skipped  # counted, never written
                        if not batch:  # only unreadable lines were left
                            await asyncio.to_thread(journal.consume, offset, journal.pending)
                            continue
                        self._in_hand, self._in_hand_journaled = batch, True
                        return batch, offset
            if not await self._await_rows():
                return [], None
            async with self._order:
                if journal is not None and journal.pending:
                    continue  # the spiller took the queue's head meanwhile
                count = min(self._batch_size, len(self._queue))
                self._taken += count
                batch = [self._queue.popleft() for _ in range(count)]
            if batch:
                self._in_hand, self._in_hand_journaled = batch, False
                return batch, None

    async def _spiller(self) -> None:
        """Keep the queue within its bound by moving its oldest rows to the journal."""
        while True:
            await self._spill.wait()
            self._spill.clear()
            async with self._order:
                await self._spill_excess()

    async def _spill_excess(self) -> None:
        if self._journal is None or len(self._queue) <= self._max_queue:
            return
        # Down to half the bound, so a long outage spills in chunks rather than row by row.
        count = len(self._queue) - self._max_queue // 2
        rows = [self._queue.popleft() for _ in range(count)]
        self._taken += count
        try:
            await asyncio.to_thread(self._journal.append, rows)
        except OSError as exc:
            # Keep them in memory rather than lose them; try the file again a little later.
            self._queue.extendleft(reversed(rows))
            self._taken -= count
            logger.error("recorder: cannot spill to %s (%r); %d rows stay in memory",
                         self._journal.path, exc, len(self._queue))
            await asyncio.sleep(SPILL_RETRY_S)
            return
        logger.warning("recorder: the database is behind; %d rows spilled to %s",
                       count, self._journal.path)

    async def _journal_the_rest(self) -> bool:
        """At a close past its grace: keep every unwritten row in the journal, oldest first."""
        journal = self._journal
        if journal is None:
            return False
        rows = [] if self._in_hand_journaled else list(self._in_hand)
        rows += await asyncio.to_thread(journal.rest)
        rows += self._queue
        self._queue.clear()
        try:
            await asyncio.to_thread(journal.rewrite, rows)
        except OSError as exc:
            logger.critical("recorder closed with %d rows unwritten and the journal %s not "
                            "writable (%r): they are lost", len(rows), journal.path, exc)
            return True
        logger.error("recorder closed after %.1fs with %d rows unwritten; kept in %s for the "
                     "next start (last error: %r)",
                     self._close_grace_s, len(rows), journal.path, self._last_error)
        return True

    async def _await_rows(self) -> bool:
        """Wait for a first row, then up to the flush interval to fill a batch; False once
        closing with nothing queued."""
        while not self._queue:
            if self._closing:
                return False
            await self._wait_wakeup(None)
        deadline = asyncio.get_running_loop().time() + self._flush_interval_s
        while len(self._queue) < self._batch_size and not self._urgent():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await self._wait_wakeup(remaining)
        return True

    def _urgent(self) -> bool:
        return self._closing or self._flush_target > self._taken

    async def _wait_wakeup(self, within_s: float | None) -> None:
        # Conditions are re-checked after every wake-up, so clearing here loses nothing.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), within_s)
        self._wakeup.clear()

    async def _deliver(self, batch: list[Record]) -> None:
        """Write a batch, retrying through outages; split it if the database rejects a row."""
        delay = self._retry_initial_s
        while True:
            try:
                await self._write(batch)
            except Exception as exc:
                if is_permanent(exc):
                    await self._deliver_rejected(batch, exc)
                    return
                self._last_error = exc
                logger.warning(
                    "recorder: writing %d rows failed, retrying in %.2fs: %r",
                    len(batch), delay, exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
            else:
                self._written += len(batch)
                self._batches += 1
                self._last_error = None
                return

    async def _deliver_rejected(self, batch: list[Record], exc: Exception) -> None:
        if len(batch) > 1:
            # Find the offending rows; the others (in order) still go in.
            for row in batch:
                await self._deliver([row])
            return
        self._last_error = exc
        self._dropped += 1
        logger.error("recorder: the database rejected a row, dropping it: %r (%r)", batch[0], exc)

    async def _write(self, batch: list[Record]) -> None:
        plan = plan_batch(batch)
        # A database that stops answering (no error, no close) is an outage too.
        async with asyncio.timeout(self._write_timeout_s), self._engine.begin() as connection:
            if self._engine.dialect.name == "postgresql":
                # The recount's cost estimate can pass jit_above_cost, and compiling it then
                # takes longer than running it.
                await connection.execute(text("SET LOCAL jit = off"))
            await write_plan(connection, plan, self._insert)
