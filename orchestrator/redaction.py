"""Log redaction: secrets are masked in every log record the process creates.

What is masked (`***` in place of the secret):
- the values of `Authorization`, `Proxy-Authorization`, `api-key` and `x-api-key` headers,
  in the forms libraries log them (`> Authorization: Bearer …` from websockets, `'api-key':
  '…'` in a dict, `(b'authorization', b'…')` in a header list), and any `Bearer …` token;
- keys by their shape: OpenAI's `sk-…`, client secrets `ek_…`, our API keys `orch_sk_…`,
  generated admin tokens `orch-admin-…`, the browser form `openai-insecure-api-key.…`;
- every value registered with `Redactor.add`: the admin token, the configured API keys, and the
  environment values the agent files and runtime-attached MCP servers reference as `${VAR}`.

`install()` wraps the process's log record factory, so the masking happens when a record is
created, before any logger, filter or handler sees it: uvicorn's, websockets', httpx's and the
MCP SDK's DEBUG records included, and handlers added later (a test's capture) too. Arguments
are masked one by one and keep their type when they hold no secret, so formatters that read
`record.args` (uvicorn's access log) keep working. Records below a logger's level are never
created, so this costs nothing on the relay path unless that logging is switched on.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import SecretStr

    from orchestrator.agents.spec import McpServerSpec

MASK = "***"
# Shorter values are not registered: masking every "8000" or "true" would garble the logs, and
# a secret that short is not one.
MIN_SECRET_CHARS = 8

_HEADER = re.compile(
    r"(?i)((?:proxy-)?authorization|x-api-key|(?<![\w-])api-key)"  # the header name
    r"(['\"]?\s*(?:[:=]|,\s*(?-i:b)?['\"])\s*(?-i:b)?['\"]?)"  # `: `, `': '` or `', b'`
    r"(?:(bearer|basic)\s+)?"
    r"([^\s'\",;)}\]]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)([^\s'\",;)}\]]+)")
_SHAPES = re.compile(
    r"(?<![A-Za-z0-9_-])(sk-|ek_|orch_sk_|orch-admin-|openai-insecure-api-key\.)"
    r"[A-Za-z0-9_\-.]{8,}"
)
_VAR_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")


class Redactor:
    """Masks secrets in text; known values are added as the process learns them."""

    def __init__(self) -> None:
        self._values: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, values: Iterable[str | None]) -> None:
        """Mask these values from now on (short and empty ones are ignored)."""
        fresh = {v for v in values if v and len(v) >= MIN_SECRET_CHARS} - self._values
        if not fresh:
            return
        with self._lock:
            self._values = self._values | fresh
            longest_first = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in longest_first))

    def __contains__(self, value: str) -> bool:
        return value in self._values

    def redact(self, text: str) -> str:
        """`text` with every secret masked."""
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        text = _HEADER.sub(_header_mask, text)
        text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
        return _SHAPES.sub(lambda m: m.group(1) + MASK, text)

    def redact_record(self, record: logging.LogRecord) -> None:
        """Mask the record's message, arguments, exception and stack text in place."""
        record.msg = self._arg(record.msg)
        if isinstance(record.args, Mapping):
            record.args = {k: self._arg(v) for k, v in record.args.items()}
        elif record.args:
            record.args = tuple(self._arg(a) for a in record.args)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)

    def _arg(self, arg: object) -> object:
        if isinstance(arg, int | float | bool) or arg is None:
            return arg
        text = arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)
        masked = self.redact(text)
        return arg if masked == text else masked


def _header_mask(match: re.Match[str]) -> str:
    scheme = f"{match.group(3)} " if match.group(3) else ""
    return f"{match.group(1)}{match.group(2)}{scheme}{MASK}"


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets (for handlers outside the record factory's reach)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the record and let it through."""
        self.redactor.redact_record(record)
        return True


REDACTOR = Redactor()
_installed = False
_install_lock = threading.Lock()


def install(values: Iterable[str | None] = ()) -> Redactor:
    """Mask secrets in every log record from now on (idempotent); `values` are added."""
    global _installed
    REDACTOR.add(values)
    with _install_lock:
        if not _installed:
            previous = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                REDACTOR.redact_record(record)
                return record

            logging.setLogRecordFactory(factory)
            _installed = True
    return REDACTOR


def referenced_values(texts: Iterable[str], env: Mapping[str, str]) -> list[str]:
    """The environment values that `${VAR}` references in `texts` expand to."""
    names = {m.group(1) for text in texts for m in _VAR_REF.finditer(text)}
    return [env[name] for name in sorted(names) if env.get(name)]


def expanded_secrets(texts: Iterable[str], env: Mapping[str, str],
                     secret_fields: Iterable[str]) -> list[str]:
    """The `${VAR}` values referenced in `texts` that ended up in a secret-bearing field (an
    MCP header or environment value, an upstream `api_key`), whole fields included; plus the
    default upstream key. A reference elsewhere (a `cwd:`, a `command:`) is not a secret, and
    masking it would only garble the logs."""
    fields = [f for f in secret_fields if f]
    values = [v for v in referenced_values(texts, env) if any(v in f for f in fields)]
    whole = [f for f in fields if any(v in f for v in values)]
    return [*values, *whole, env.get("OPENAI_API_KEY", "")]


def yaml_texts(folder: Path) -> list[str]:
    """The text of every YAML file under `folder` (unreadable ones skipped)."""
    texts: list[str] = []
    if folder.is_dir():
        for path in sorted(folder.rglob("*.y*ml")):
            with contextlib.suppress(OSError):
                texts.append(path.read_text(errors="replace"))
    return texts


def register_agent_secrets(agents_dir: Path, servers: Iterable[McpServerSpec],
                           api_keys: Iterable[SecretStr | None],
                           env: Mapping[str, str]) -> None:
    """Mask the `${VAR}` values the agent files expanded into MCP headers, MCP environments
    and upstream `api_key`s (see `expanded_secrets`)."""
    fields = [v.get_secret_value() for server in servers for v in server.headers.values()]
    fields += [v for server in servers for v in server.env.values()]
    fields += [k.get_secret_value() for k in api_keys if k is not None]
    REDACTOR.add(expanded_secrets(yaml_texts(agents_dir), env, fields))
