"""YAML text → plain Python values that remember where each key and value was written.

Parsing goes through ruamel.yaml's node tree (not its constructor) so that every value keeps
its 1-based line and column, duplicate keys and aliases can be refused, and `${VAR}` references
are expanded with the position of the string they occur in. Aliases are refused outright: agent
files gain little from them, and refusing them rules out alias bombs ("billion laughs").

Hostile files get a `path:line:column` problem, never a traceback or a hang: the file is at
most `MAX_FILE_BYTES`, nested at most `MAX_DEPTH` levels, holds at most `MAX_NODES` values
(counted while composing, so a flood stops early), and `${VAR}` expansion adds at most
`MAX_EXPANDED_CHARS` characters to its values.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, ComposerError, MaxDepthExceededError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from orchestrator.errors import Problem

Loc = tuple[str | int, ...]
Position = tuple[int, int]

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 10_000
MAX_EXPANDED_CHARS = 1024 * 1024
_TAG = "tag:yaml.org,2002:"
_PLAIN_SCALARS = frozenset(_TAG + t for t in ("null", "bool", "int", "float"))
# `$${` is a literal `${`; `${NAME}` and `${NAME:-default}` are references.
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_VAR = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$", re.DOTALL)
# Environment values shorter than this are not redacted from messages: masking "1" or "on"
# would garble every message and such values are not secrets.
_MIN_SECRET_LEN = 4


class DocumentError(Exception):
    """The file cannot be turned into data at all (encoding, syntax, structure)."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


@dataclass(frozen=True, slots=True)
class Positions:
    """Where each value (and each mapping key) of a document was written, by field path."""

    values: Mapping[Loc, Position] = field(default_factory=dict[Loc, Position])
    keys: Mapping[Loc, Position] = field(default_factory=dict[Loc, Position])

    def locate(self, loc: Sequence[str | int]) -> Position:
        """Position of the value at `loc`, else of its nearest existing parent, else (1, 1)."""
        path = tuple(loc)
        while path:
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get((), (1, 1))

    def locate_key(self, loc: Sequence[str | int]) -> Position:
        """Position of the key naming `loc` (for unknown fields), else as `locate`."""
        return self.keys.get(tuple(loc)) or self.locate(loc)


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed YAML file: its data after `${VAR}` expansion and the positions of its parts."""

    data: Any
    positions: Positions
    secrets: tuple[str, ...] = ()
    problems: tuple[tuple[Loc, Problem], ...] = ()
    from_env: frozenset[Loc] = frozenset()  # values that hold an environment variable's value

    def redact(self, message: str) -> str:
        """`message` with every expanded environment value masked."""
        for secret in self.secrets:
            message = message.replace(secret, "***")
        return message


def format_loc(loc: Sequence[str | int]) -> str:
    """`('tools', 0, 'timeout_s')` → `tools[0].timeout_s`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def parse_document(raw: bytes, path: str, env: Mapping[str, str]) -> Document:
    """Parse one YAML file; raises `DocumentError` when no data can be had from it."""
    if len(raw) > MAX_FILE_BYTES:
        _fail(path, (1, 1), f"file is larger than {MAX_FILE_BYTES} bytes")
    text = _decode(raw, path)
    if not text.strip():
        _fail(path, (1, 1), "file is empty")
    root = _compose(text, path)
    if root is None:
        _fail(path, (1, 1), "file holds no YAML document")
    if not _is_mapping(root):
        _fail(path, _pos(root), f"the top level must be a mapping, not {_kind(root)}")
    builder = _Builder(path, env)
    data = builder.build(root, ())
    return Document(
        data=data,
        positions=Positions(builder.values, builder.keys),
        secrets=tuple(sorted(builder.secrets, key=len, reverse=True)),
        problems=tuple(builder.problems),
        from_env=frozenset(builder.from_env),
    )


def _fail(path: str, position: Position, message: str) -> NoReturn:
    raise DocumentError(Problem(path, position[0], position[1], message))


def _decode(raw: bytes, path: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        _fail(path, (line, column), f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x})")
    return text.removeprefix("\ufeff")


class _NodeLimitExceededError(MarkedYAMLError):
    """More than `MAX_NODES` nodes in one file."""


class _GuardedComposer(Composer):
    """A composer that refuses `*alias` references (the only way to build an alias bomb) and
    stops after `MAX_NODES` nodes."""

    nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        # ruamel's own annotations are incomplete; treat its objects as Any here.
        parser: Any = cast(Any, self).parser
        if parser.check_event(AliasEvent):
            event: Any = parser.get_event()
            raise ComposerError(
                None, None, f"YAML aliases are not allowed (*{event.anchor})", event.start_mark,
            )
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _NodeLimitExceededError(
                None, None, f"file has more than {MAX_NODES} YAML nodes",
                parser.peek_event().start_mark)
        return cast(Any, super()).compose_node(parent, index)


def _compose(text: str, path: str) -> Any:
    yaml = YAML(typ="safe", pure=True)
    yaml.Composer = _GuardedComposer
    yaml.max_depth = MAX_DEPTH
    try:
        with warnings.catch_warnings():
            # A reused anchor name only warns in ruamel; with aliases refused it is harmless.
            warnings.simplefilter("ignore")
            node: Any = cast(Any, yaml).compose(text)
    except MaxDepthExceededError as exc:
        _fail(path, _mark_position(exc), f"YAML nested deeper than {MAX_DEPTH} levels")
    except MarkedYAMLError as exc:
        _fail(path, _mark_position(exc), _syntax_message(exc))
    except ReaderError as exc:
        _fail(path, _offset_position(text, int(cast(Any, exc).position)), _reader_message(exc))
    except YAMLError as exc:
        _fail(path, (1, 1), f"invalid YAML: {exc}")
    except (ValueError, TypeError, AttributeError, IndexError, KeyError, RecursionError) as exc:
        # A parser bug on hostile input must still read as a problem of the file.
        _fail(path, (1, 1), f"invalid YAML ({type(exc).__name__})")
    return node


def _mark_position(exc: MarkedYAMLError) -> Position:
    error: Any = exc
    mark: Any = error.problem_mark or error.context_mark
    return (int(mark.line) + 1, int(mark.column) + 1) if mark is not None else (1, 1)


def _syntax_message(exc: MarkedYAMLError) -> str:
    error: Any = exc
    problem = str(error.problem or "invalid YAML")
    if problem.startswith("YAML aliases") or isinstance(exc, _NodeLimitExceededError):
        return problem
    context = f"{error.context}, " if error.context else ""
    return f"YAML syntax error: {context}{problem}"


def _reader_message(exc: ReaderError) -> str:
    error: Any = exc
    char: Any = error.character
    code = ord(char) if isinstance(char, str) else int(char)
    return f"YAML syntax error: unacceptable character #x{code:04x}: {error.reason}"


def _offset_position(text: str, offset: int) -> Position:
    before = text[:offset]
    return (before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1)


# Typed accessors: ruamel's node classes carry no usable annotations.
def _pos(node: Any) -> Position:
    return (int(node.start_mark.line) + 1, int(node.start_mark.column) + 1)


def _tag(node: Any) -> str:
    return str(node.tag)


def _is_mapping(node: Any) -> bool:
    return isinstance(node, MappingNode)


def _is_sequence(node: Any) -> bool:
    return isinstance(node, SequenceNode)


def _pairs(node: Any) -> list[tuple[Any, Any]]:
    return list(node.value)


def _items(node: Any) -> list[Any]:
    return list(node.value)


def _short_tag(tag: str | None) -> str:
    return "!!" + tag.removeprefix(_TAG) if tag and tag.startswith(_TAG) else str(tag)


def _kind(node: Any) -> str:
    if _is_sequence(node):
        return "a list"
    if _is_mapping(node):
        return "a mapping"
    return "a string" if _tag(node) == _TAG + "str" else "a scalar value"


class _Builder:
    """Walks a node tree into dicts, lists and scalars, recording positions on the way."""

    def __init__(self, path: str, env: Mapping[str, str]) -> None:
        self.path = path
        self.env = env
        self.values: dict[Loc, Position] = {}
        self.keys: dict[Loc, Position] = {}
        self.secrets: set[str] = set()
        self.from_env: set[Loc] = set()
        self.problems: list[tuple[Loc, Problem]] = []
        self._expanded = 0  # characters added by `${VAR}` expansion so far
        self._constructor: Any = cast(Any, YAML(typ="safe", pure=True)).constructor

    def build(self, node: Any, loc: Loc) -> Any:
        self.values[loc] = _pos(node)
        if _is_mapping(node):
            return self._mapping(node, loc)
        if _is_sequence(node):
            self._require_tag(node, "seq")
            return [self.build(item, (*loc, i)) for i, item in enumerate(_items(node))]
        return self._scalar(node, loc)

    def _mapping(self, node: Any, loc: Loc) -> dict[str, Any]:
        self._require_tag(node, "map")
        result: dict[str, Any] = {}
        for key_node, value_node in _pairs(node):
            key = self._key(key_node)
            if key in result:
                line = self.keys[(*loc, key)][0]
                self._problem(loc, _pos(key_node), f"duplicate key '{key}' (first at line {line})")
                continue
            self.keys[(*loc, key)] = _pos(key_node)
            result[key] = self.build(value_node, (*loc, key))
        return result

    def _key(self, node: Any) -> str:
        # Keys stay text as written (`1:` is the key "1"): every mapping we read is keyed by name.
        if not isinstance(node, ScalarNode):
            _fail(self.path, _pos(node), "a mapping key must be a plain value, not " + _kind(node))
        if _tag(node) == _TAG + "merge":
            _fail(self.path, _pos(node), "YAML merge keys (<<) are not supported")
        self._scalar_value(node)  # refuses unsupported tags
        return str(cast(Any, node).value)

    def _scalar(self, node: Any, loc: Loc) -> Any:
        value = self._scalar_value(node)
        if isinstance(value, str) and "$" in value:
            return self._interpolate(value, node, loc)
        return value

    def _scalar_value(self, node: Any) -> Any:
        tag = _tag(node)
        if tag in (_TAG + "str", _TAG + "timestamp"):
            # An unquoted date stays text: no field of ours wants a datetime.
            return str(node.value)
        if tag in _PLAIN_SCALARS:
            return self._constructor.construct_object(node, deep=True)
        _fail(self.path, _pos(node), f"unsupported YAML tag {_short_tag(tag)}")

    def _require_tag(self, node: Any, kind: str) -> None:
        if _tag(node) != _TAG + kind:
            _fail(self.path, _pos(node), f"unsupported YAML tag {_short_tag(_tag(node))}")

    def _interpolate(self, text: str, node: Any, loc: Loc) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(1) is None:
                return "${"
            return self._resolve(match.group(0), match.group(1), node, loc)

        return _REFERENCE.sub(replace, text)

    def _resolve(self, whole: str, inner: str, node: Any, loc: Loc) -> str:
        var = _VAR.match(inner)
        if var is None:
            self._problem(loc, _pos(node), f"invalid environment variable reference {whole!r}")
            return ""
        name, default = var.group(1), var.group(2)
        value = self.env.get(name)
        self._expanded += len(value or default or "")
        if self._expanded > MAX_EXPANDED_CHARS:
            if not any(p.message.startswith("expanding environment") for _, p in self.problems):
                self._problem(loc, _pos(node), "expanding environment variables makes this "
                              f"file's values longer than {MAX_EXPANDED_CHARS} characters")
            return ""
        if value:
            self.from_env.add(loc)
            if len(value) >= _MIN_SECRET_LEN:
                self.secrets.add(value)
            return value
        if default is not None:
            return default
        if value is None:
            self._problem(loc, _pos(node), f"environment variable {name} is not set")
        return ""

    def _problem(self, loc: Loc, position: Position, message: str) -> None:
        self.problems.append((loc, Problem(self.path, position[0], position[1], message)))
