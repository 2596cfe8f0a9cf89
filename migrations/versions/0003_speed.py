"""Recorder and stats speed: item text indexed for search once per recorder batch instead of
once per row (SQLite), and a covering index for the agent stats.

Migration 0002 kept the FTS5 table in step with an AFTER INSERT trigger: FTS5 then tokenizes
and merges row by row, ~80 % of the recorder's time on SQLite (28k items/s against ~150k/s
when the same rows are indexed with one `INSERT … SELECT` per batch). The recorder now does
that itself, in the batch's transaction (`store/recorder.py`, `write_plan`). The delete and
update triggers stay (erasure rewrites text row by row). PostgreSQL's expression index is
unaffected.

`ix_responses_agent_stats` covers the agent statistics (counts, failures, latency, tokens by
agent and time): SQLite scanned the whole `responses` table, `usage` JSON included, for them
(680 ms at 400,000 responses; 275 ms over the index).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INSERT_TRIGGER = (
    "CREATE TRIGGER items_fts_ai AFTER INSERT ON items WHEN new.text IS NOT NULL BEGIN "
    "INSERT INTO items_fts(rowid, text) VALUES (new.id, new.text); END"
)


_STATS_INDEX = "ix_responses_agent_stats"


def upgrade() -> None:
    """Drop the per-row insert trigger (SQLite only); add the agent stats index."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS items_fts_ai")
    op.create_index(_STATS_INDEX, "responses", [
        "agent", "created_at", "status", "first_output_latency_ms", "input_tokens", "output_tokens",
        "total_tokens", "input_text_tokens", "input_audio_tokens", "output_text_tokens",
        "output_audio_tokens"])


def downgrade() -> None:
    """Restore the per-row insert trigger (SQLite only); drop the agent stats index."""
    op.drop_index(_STATS_INDEX, table_name="responses")
    if op.get_bind().dialect.name == "sqlite":
        op.execute(_INSERT_TRIGGER)
