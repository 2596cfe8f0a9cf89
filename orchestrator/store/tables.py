"""The SQL schema as SQLAlchemy 2 typed models (design §4.7).

Alembic owns the schema (`migrations/`); these models are its reference, and a test checks that
the two agree. Timestamps are stored in UTC and always read back timezone-aware, on SQLite too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """`DateTime(timezone=True)` that stores UTC and returns aware datetimes on every backend.

    SQLite keeps no offset, so values are normalised to UTC before binding (string order is then
    time order) and tagged UTC when read back.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Normalise to UTC; a naive value is taken to be UTC already."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base carrying the naming convention, so constraint names are stable."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON()}  # noqa: RUF012


class AgentVersion(Base):
    """One distinct definition of an agent; `version` counts up per name."""

    __tablename__ = "agent_versions"
    __table_args__ = (
        UniqueConstraint("name", "sha256"),
        UniqueConstraint("name", "version"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String)
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    definition: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class McpServer(Base):
    """An MCP server attached at run time through the admin API (shared by all replicas)."""

    __tablename__ = "mcp_servers"

    name: Mapped[str] = mapped_column(String, primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


def _bigint_pk() -> Mapped[int]:
    # SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
    return mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )


def _counter() -> Mapped[int]:
    return mapped_column(Integer, default=0, server_default="0")


class Conversation(Base):
    """One realtime connection: who, when, how it ended, and running totals."""

    __tablename__ = "conversations"
    __table_args__ = (
        Index(None, "agent", "started_at"),
        Index(None, "status"),
        Index(None, "started_at", "id"),
    )

    id: Mapped[str] = mapped_column(String, primary_key=True)
    agent: Mapped[str] = mapped_column(String)
    agent_version: Mapped[int | None] = mapped_column(Integer)
    current_agent: Mapped[str | None] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)
    started_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    end_reason: Mapped[str | None] = mapped_column(String)
    client: Mapped[dict[str, Any]] = mapped_column()
    input_tokens: Mapped[int] = _counter()
    output_tokens: Mapped[int] = _counter()
    total_tokens: Mapped[int] = _counter()
    item_count: Mapped[int] = _counter()
    tool_call_count: Mapped[int] = _counter()
    handoff_count: Mapped[int] = _counter()
    response_count: Mapped[int] = _counter()
    # Failed tool calls + failed responses; `has_error` filters on it.
    error_count: Mapped[int] = _counter()
    # Set when the content was erased (DELETE /admin/conversations/{id}); the row is a tombstone.
    erased_at: Mapped[datetime | None] = mapped_column()


def _conversation_fk() -> Mapped[str]:
    return mapped_column(String, ForeignKey("conversations.id", ondelete="CASCADE"))


class Item(Base):
    """A finalized conversation item; (conversation_id, seq) is its identity."""

    __tablename__ = "items"
    # The unique constraint's index also serves lookups by conversation_id alone.
    __table_args__ = (UniqueConstraint("conversation_id", "seq"),)

    id: Mapped[int] = _bigint_pk()
    conversation_id: Mapped[str] = _conversation_fk()
    seq: Mapped[int] = mapped_column(Integer)
    item_id: Mapped[str | None] = mapped_column(String)
    type: Mapped[str] = mapped_column(String)
    role: Mapped[str | None] = mapped_column(String)
    agent: Mapped[str] = mapped_column(String)
    text: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(String)
    call_id: Mapped[str | None] = mapped_column(String)
    name: Mapped[str | None] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column()


class ToolCall(Base):
    """One server-run tool call (MCP tool or handoff) with its result and timing."""

    __tablename__ = "tool_calls"
    __table_args__ = (
        UniqueConstraint("conversation_id", "call_id"),
        Index(None, "tool"),
        Index(None, "server"),
        Index(None, "status"),
        Index(None, "started_at"),
        # Stats: percentiles per tool walk (server, tool, duration_ms); windows walk started_at.
        Index(None, "server", "tool", "duration_ms", "started_at", "status"),
        Index(None, "started_at", "tool", "server", "status", "duration_ms"),
        Index(None, "conversation_id", "tool", "status"),
        Index(None, "agent", "started_at", "status"),
    )

    id: Mapped[int] = _bigint_pk()
    conversation_id: Mapped[str] = _conversation_fk()
    call_id: Mapped[str] = mapped_column(String)
    agent: Mapped[str] = mapped_column(String)
    server: Mapped[str] = mapped_column(String)
    tool: Mapped[str] = mapped_column(String)
    arguments: Mapped[str] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String)
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime] = mapped_column()
    duration_ms: Mapped[float] = mapped_column(Float)


class Handoff(Base):
    """An edge from one agent to another inside a conversation."""

    __tablename__ = "handoffs"
    __table_args__ = (UniqueConstraint("conversation_id", "call_id"), Index(None, "to_agent"))

    id: Mapped[int] = _bigint_pk()
    conversation_id: Mapped[str] = _conversation_fk()
    from_agent: Mapped[str] = mapped_column(String)
    to_agent: Mapped[str] = mapped_column(String)
    call_id: Mapped[str] = mapped_column(String)
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column()


RESPONSE_TOKEN_COLUMNS = (
    "input_tokens", "output_tokens", "total_tokens", "input_text_tokens", "input_audio_tokens",
    "output_text_tokens", "output_audio_tokens",
)


class Response(Base):
    """One model response: status, token usage and first-output latency."""

    __tablename__ = "responses"
    __table_args__ = (
        UniqueConstraint("conversation_id", "response_id"),
        Index(None, "created_at", "agent"),
        Index(None, "agent", "first_output_latency_ms", "created_at"),
        # Covers the agent stats (migration 0003): a scan of it, not of the rows with `usage`.
        Index("ix_responses_agent_stats", "agent", "created_at", "status",
              "first_output_latency_ms", *RESPONSE_TOKEN_COLUMNS),
    )

    id: Mapped[int] = _bigint_pk()
    conversation_id: Mapped[str] = _conversation_fk()
    response_id: Mapped[str] = mapped_column(String)
    agent: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)
    usage: Mapped[dict[str, Any] | None] = mapped_column()
    input_tokens: Mapped[int] = _counter()
    output_tokens: Mapped[int] = _counter()
    total_tokens: Mapped[int] = _counter()
    first_output_latency_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column()
    done_at: Mapped[datetime] = mapped_column()
    # Token usage by modality (usage.*_token_details), summed by the agent stats.
    input_text_tokens: Mapped[int] = _counter()
    input_audio_tokens: Mapped[int] = _counter()
    output_text_tokens: Mapped[int] = _counter()
    output_audio_tokens: Mapped[int] = _counter()


class ApiKey(Base):
    """A realtime API key created through the admin API; only its sha256 is kept."""

    __tablename__ = "api_keys"
    __table_args__ = (UniqueConstraint("sha256"),)

    id: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    prefix: Mapped[str] = mapped_column(String)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class ClientSecret(Base):
    """An ephemeral `ek_` client secret bound to one agent, until `expires_at`."""

    __tablename__ = "client_secrets"
    __table_args__ = (Index(None, "expires_at"),)

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent: Mapped[str] = mapped_column(String)
    session: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column()


metadata = Base.metadata
