"""The tool policy: which calls the model makes are run, and how a refused one is answered.

A call is refused before it runs when its call id was already run (never twice), when its name
is denied to the agent or is no tool of it, when the user declines it or does not approve it in
time, or when its arguments are too large, too deep, not a JSON object or break the tool's input
schema. A refusal is an error result the model can read, and the status the record keeps
(`duplicate`, `denied`, `unknown`, `approval_denied`, `approval_timeout`, `invalid_arguments`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import orjson
from jsonschema import exceptions as schema_errors
from jsonschema import validators

from orchestrator.tools.convert import ErrorKind
from orchestrator.tools.types import ToolInfo, ToolResult

MAX_ARGUMENTS_BYTES = 256 * 1024
MAX_ARGUMENTS_DEPTH = 32


def refused(message: str, kind: ErrorKind = "invalid") -> ToolResult:
    """An error result for a call the orchestrator stopped itself (compact JSON for the model)."""
    return ToolResult(output=orjson.dumps({"error": message}).decode(), is_error=True,
                      error=message, error_kind=kind)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call is not run: the status recorded, the result the model gets, and for a
    duplicate the call id its row is recorded under."""

    status: str
    result: ToolResult
    row_call_id: str | None = None


class CallGate:
    """The call ids one session has run or refused: a call id is never run twice."""

    def __init__(self) -> None:
        self.call_ids: set[str] = set()
        self.duplicates = 0

    def admit(self, call_id: str, name: str, agent: str, refused_as: str | None,
              ) -> Refusal | None:
        """None if the call may run, else its refusal. `refused_as` is `denied` or `unknown`
        for a name outside the agent's tool set, else None."""
        if call_id in self.call_ids:
            self.duplicates += 1
            return Refusal("duplicate", refused(f"call_id {call_id} was already executed"),
                           row_call_id=f"{call_id}#duplicate-{self.duplicates}")
        self.call_ids.add(call_id)
        if refused_as is None:
            return None
        verb = "is denied to" if refused_as == "denied" else "is not a tool of"
        return Refusal(refused_as, refused(
            f"tool {name!r} {verb} agent {agent!r}; it was not run", "tool"))

    def server_runs(self, call_id: str) -> bool:
        """Whether this session runs (or refused) the call: its output is not the client's."""
        return call_id in self.call_ids


def approval_refusal(name: str, verdict: str, reason: str | None) -> Refusal | None:
    """None if the user approved the call, else the refusal the model gets."""
    if verdict == "approved":
        return None
    if verdict == "timeout":
        return Refusal("approval_timeout", refused(
            f"the user did not approve {name!r} in time; it was not run", "tool"))
    why = f": {reason}" if reason else ""
    return Refusal(f"approval_{verdict}",
                   refused(f"the user declined to run {name!r}{why}", "tool"))


def result_status(result: ToolResult) -> str | None:
    """The policy status of a result from the tool path (`invalid_arguments`), else None."""
    return "invalid_arguments" if result.error_kind == "invalid" else None


# --- arguments ------------------------------------------------------------------------------


def parse_arguments(arguments_json: str) -> dict[str, Any] | str:
    """The model's arguments as a JSON object, or why they are refused (too large, too deeply
    nested, not JSON, not an object)."""
    if len(arguments_json.encode()) > MAX_ARGUMENTS_BYTES:
        return f"arguments exceed {MAX_ARGUMENTS_BYTES} bytes"
    try:
        arguments: object = json.loads(arguments_json) if arguments_json.strip() else {}
    except json.JSONDecodeError as exc:
        return f"arguments are not valid JSON: {exc}"
    except RecursionError:
        return f"arguments are nested deeper than {MAX_ARGUMENTS_DEPTH} levels"
    if not isinstance(arguments, dict):
        return "arguments must be a JSON object"
    checked = cast(dict[str, Any], arguments)
    if _depth(checked) > MAX_ARGUMENTS_DEPTH:
        return f"arguments are nested deeper than {MAX_ARGUMENTS_DEPTH} levels"
    return checked


def _depth(value: object) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_ARGUMENTS_DEPTH:
            break
        children = (cast(dict[str, Any], node).values() if isinstance(node, dict)
                    else cast(list[Any], node) if isinstance(node, list) else ())
        stack.extend((child, level + 1) for child in children)
    return deepest


def schema_problem(info: ToolInfo | None, arguments: dict[str, Any]) -> str | None:
    """Why `arguments` break the tool's input schema, or None (also for an unusable schema)."""
    if info is None or not info.input_schema:
        return None  # the pool answers for a tool it does not know
    validator = _validator(info)
    if validator is None:
        return None
    error = cast(
        "schema_errors.ValidationError | None",
        schema_errors.best_match(validator.iter_errors(arguments)),  # pyright: ignore[reportUnknownMemberType]
    )
    if error is None:
        return None
    parts = cast("list[object]", list(error.absolute_path))  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
    message = error.message
    return f"{'/'.join(str(p) for p in parts)}: {message}" if parts else message


# Compiling a validator costs far more than using it: keep one per cached schema object
# (the pool replaces ToolInfo objects on refresh, so a changed schema gets a new one).
_validators: dict[tuple[str, str], tuple[dict[str, Any], Any]] = {}


def _validator(info: ToolInfo) -> Any:
    key = (info.server, info.name)
    cached = _validators.get(key)
    if cached is not None and cached[0] is info.input_schema:
        return cached[1]
    validator_class: Any = validators.validator_for(info.input_schema)
    try:
        validator_class.check_schema(info.input_schema)
    except schema_errors.SchemaError:
        validator = None  # a server's broken schema is the server's business, not the model's
    else:
        validator = validator_class(info.input_schema)
    _validators[key] = (info.input_schema, validator)
    return validator
