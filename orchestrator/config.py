"""Process settings, read from the environment (prefix ORCHESTRATOR_) and CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///var/orchestrator.db"


class Settings(BaseSettings):
    """Everything one orchestrator process needs to know at start."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    agents_dir: Path = Path("agents")
    database_url: str = DEFAULT_DATABASE_URL
    var_dir: Path = Path("var")
    admin_token: SecretStr | None = None
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list[SecretStr])
    # Auth throttle (ratelimit.py): a remote address that presents this many wrong credentials
    # within the window gets 429 until the oldest of them ages out (0 or None: off); at most
    # `auth_throttle_max_addresses` addresses are remembered.
    auth_max_failures: int | None = 10
    auth_failure_window_s: float = 60.0
    auth_throttle_max_addresses: int = 10_000
    # Recorder: rows are written in batches of at most this many, at least this often.
    recorder_batch_size: int = 1000
    recorder_flush_interval_s: float = 0.2
    # During a database outage: rows kept in memory before the oldest spill to the journal
    # file (default `var_dir/recorder-journal.jsonl`), and how long a stop waits to write them.
    recorder_max_queue: int = 100_000
    recorder_journal_path: Path | None = None
    recorder_close_grace_s: float = 10.0
    # MCP pool
    mcp_connect_timeout_s: float = 20.0
    mcp_default_call_timeout_s: float = 10.0
    # Liveness: a server that does not answer a probe (one tools/list page) within the
    # timeout is restarted (None: off).
    mcp_ping_interval_s: float | None = 10.0
    mcp_ping_timeout_s: float = 10.0
    # Realtime
    upstream_connect_timeout_s: float = 10.0
    # A model server that answers no ping within the timeout is taken for gone (1011).
    upstream_ping_interval_s: float = 10.0
    upstream_ping_timeout_s: float = 10.0
    # A response the model started and then streams nothing of for this long ends the session.
    upstream_response_timeout_s: float | None = 60.0
    max_client_frame_bytes: int = 16 * 1024 * 1024
    # Admission and overload (realtime/admission.py): past `max_sessions` live sessions, or
    # while the smoothed event-loop lag exceeds `max_loop_lag_ms` (None: off, the default,
    # since spawning MCP servers makes short spikes normal), new sessions get 503.
    max_sessions: int | None = 300
    max_loop_lag_ms: float | None = None
    admission_retry_after_s: int = 5
    # A client whose socket takes longer than this to accept one frame is disconnected.
    client_send_timeout_s: float = 10.0
    # On SIGTERM: how long live sessions get to end before the server closes them anyway.
    shutdown_grace_s: float = 10.0

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    def resolved_database_url(self) -> str:
        """The database URL with a relative SQLite path made absolute and its folder created."""
        prefix = "sqlite+aiosqlite:///"
        if self.database_url.startswith(prefix):
            raw = self.database_url[len(prefix):]
            if raw and raw != ":memory:" and not raw.startswith("/"):
                path = Path(raw).resolve()
                path.parent.mkdir(parents=True, exist_ok=True)
                return prefix + str(path)
            if raw.startswith("/"):
                Path(raw).parent.mkdir(parents=True, exist_ok=True)
        return self.database_url
