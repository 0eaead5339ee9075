"""YAML parsing that remembers line numbers, and pydantic errors turned into one-line messages.

Every recipe error names ``file:line`` and the fix. PyYAML's composed node tree keeps a
``start_mark`` per node; we record the line of every path (``("pruners", "p1", "params", 2)``)
so that a pydantic error ``loc`` (or a later, model-dependent error) can be mapped back to a line.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ValidationError

from prunekit.errors import ConfigError

Loc = tuple[Any, ...]

# Singular nouns for the named sections, used in messages ("in pruner 'agp1'").
_SECTION_NOUNS = {
    "pruners": "pruner",
    "regularizers": "regularizer",
    "lr_schedules": "lr schedule",
    "lr_schedulers": "lr_scheduler",
    "extensions": "extension",
    "quantizers": "quantizer",
}


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float.

    YAML 1.1 (PyYAML) only treats exponent notation with a dot as a float, so ``1e-4`` would
    silently become the *string* "1e-4" — a classic trap for learning rates and strengths.
    """


_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))


class RecipeValueError(ValueError):
    """A validation failure raised inside a model validator, pointing at a sub-path.

    Args:
        message: the text after the location (already naming the offending value).
        loc: path relative to the model that raised it, e.g. ``("policies", 3, "pruner")``.
    """

    def __init__(self, message: str, loc: Loc = ()) -> None:
        super().__init__(message)
        self.loc = tuple(loc)


@dataclass
class SourceMap:
    """Line numbers of a recipe's paths in the file it came from.

    Args:
        filename: shown in messages (the path as given).
        lines: path → 1-based line of that path's value.
        key_lines: path → 1-based line of the key naming that path (for "unknown key").
        format: ``native`` or ``distiller`` (the file's format).
    """

    filename: str = "<recipe>"
    format: str = "native"
    lines: dict[Loc, int] = field(default_factory=dict)
    key_lines: dict[Loc, int] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    """``file:line: duplicate key …`` messages found while parsing (reported with the file's
    other errors, so one duplicate does not hide them)."""

    def line(self, loc: Iterable[Any], *, key: bool = False) -> int | None:
        """Line of ``loc`` or of its longest recorded prefix (``None`` if nothing is known)."""
        path = tuple(loc)
        while True:
            if key and path in self.key_lines:
                return self.key_lines[path]
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def prefix(self, loc: Iterable[Any] = (), *, key: bool = False) -> str:
        """``"file:line: "`` for ``loc`` (``"file: "`` when the line is unknown)."""
        line = self.line(loc, key=key)
        return f"{self.filename}:{line}: " if line is not None else f"{self.filename}: "

    def error(self, loc: Iterable[Any], message: str, *, key: bool = False) -> ConfigError:
        """A :class:`ConfigError` reading ``file:line: message``."""
        return ConfigError(self.prefix(loc, key=key) + message)


def parse_yaml(text: str, filename: str) -> tuple[Any, SourceMap]:
    """Parse YAML text into plain data plus a :class:`SourceMap`.

    Raises:
        ConfigError: on a syntax error (with the parser's line) or an empty document. Duplicate
            keys are recorded in ``SourceMap.duplicates`` (naming both lines) and reported by
            :func:`raise_problems` together with the file's other errors.
    """
    try:
        node = yaml.compose(text, Loader=_RecipeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"{mark.line + 1}" if mark is not None else "?"
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(
            f"{filename}:{line}: YAML syntax error: {problem} — check indentation, colons and quotes"
        ) from None
    except yaml.YAMLError as exc:  # pragma: no cover - non-marked errors are rare
        raise ConfigError(f"{filename}: YAML error: {exc}") from None
    if node is None:
        raise ConfigError(f"{filename}:1: the file is empty; a recipe is a YAML mapping")
    source = SourceMap(filename)
    _record(node, (), source)
    loader = _RecipeLoader(text)
    try:
        data = loader.construct_document(node)
    except yaml.constructor.ConstructorError as exc:
        where = str(exc.problem_mark.line + 1) if exc.problem_mark else "?"
        raise ConfigError(f"{filename}:{where}: YAML error: {exc.problem}") from None
    finally:
        loader.dispose()
    return data, source


def read_yaml(path: str | Path) -> tuple[Any, SourceMap]:
    """Read and parse a YAML file (see :func:`parse_yaml`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"recipe file {str(p)!r} not found; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read recipe file {str(p)!r}: {exc}") from None
    return parse_yaml(text, str(path))


def _record(node: yaml.Node, path: Loc, source: SourceMap) -> None:
    """Walk the node tree recording the line of each path; reject duplicate keys."""
    source.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                source.duplicates.append(
                    f"{source.filename}:{line}: duplicate key {key!r} in {_describe(path)} "
                    f"(first defined at line {seen[key]}); rename or remove one"
                )
                continue
            seen[key] = line
            # Record both the string form and, for integer-looking keys, the int form,
            # because pydantic's ``loc`` keeps keys as the YAML constructed them.
            for k in _key_forms(key):
                source.key_lines[(*path, k)] = line
                _record(value_node, (*path, k), source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _record(item, (*path, i), source)


def _key_forms(key: str) -> list[Any]:
    return [key, int(key)] if re.fullmatch(r"[-+]?\d+", key) else [key]


def _describe(loc: Loc) -> str:
    """Human name of the thing at ``loc`` ("pruner 'agp1'", "policy #3", "section 'data'")."""
    if not loc:
        return "the recipe"
    head = loc[0]
    if head == "policies" and len(loc) > 1 and isinstance(loc[1], int):
        return f"policy #{loc[1] + 1}"
    if head in _SECTION_NOUNS and len(loc) > 1:
        return f"{_SECTION_NOUNS[head]} {loc[1]!r}"
    return f"section {head!r}"


# ---------------------------------------------------------------------------------------------
# pydantic errors → one line each
# ---------------------------------------------------------------------------------------------


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``Optional`` so the structural type remains."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return tp


def _literal_values(tp: Any) -> list[Any]:
    tp = _unwrap(tp)
    return list(typing.get_args(tp)) if typing.get_origin(tp) is typing.Literal else []


def _step(tp: Any, elem: Any) -> tuple[str, Any]:
    """One step of walking ``loc`` through a type: returns (kind, next type)."""
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, info in tp.model_fields.items():
            if elem in (name, info.alias):
                return "field", info.annotation
        return "other", None
    if origin in (dict, Mapping) or tp is dict:
        args = typing.get_args(tp)
        if elem == "[key]":
            return "key", None
        return "item", args[1] if len(args) == 2 else Any
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return "item", args[0] if args else Any
    if origin in (Union, types.UnionType):
        for member in typing.get_args(tp):
            member = _unwrap(member)
            if isinstance(member, type) and issubclass(member, BaseModel):
                if elem == member.__name__:  # a callable discriminator's Tag
                    return "tag", member
                for info in member.model_fields.values():
                    if elem in _literal_values(info.annotation):
                        return "tag", member
    return "other", None


def _walk(root: type[BaseModel], loc: Loc) -> tuple[Loc, Any, str | None]:
    """Drop union tags from ``loc``; also return the type reached and the last field name."""
    tp: Any = root
    clean: list[Any] = []
    last_field: str | None = None
    for elem in loc:
        kind, nxt = _step(tp, elem)
        if kind == "tag":
            tp = nxt
            continue
        if kind == "field":
            last_field = str(elem)
        clean.append(elem)
        tp = nxt if nxt is not None else Any
    return tuple(clean), tp, last_field


def _label(loc: Loc, last_field: str | None) -> str:
    """``'final_sparsity'`` or ``'params[2]'`` for the innermost field (plus item indexes)."""
    if last_field is None:
        return repr(loc[-1]) if loc else "value"
    idx = len(loc) - 1 - list(reversed(loc)).index(last_field) if last_field in loc else -1
    tail = "".join(f"[{e!r}]" if isinstance(e, str) else f"[{e}]" for e in loc[idx + 1 :])
    return f"'{last_field}{tail}'"


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" — did you mean {close[0]!r}?" if close else ""


def _allowed_keys(tp: Any) -> list[str]:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [info.alias or name for name, info in tp.model_fields.items()]
    return []


def _quoted(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def _container_of(loc: Loc) -> Loc:
    """The named entry (``("pruners", "p1")``) or section (``("training",)``) holding ``loc``."""
    if loc and loc[0] in (*_SECTION_NOUNS, "policies") and len(loc) >= 2:
        return loc[:2]
    return loc[:1]


def _format_one(err: Mapping[str, Any], root: type[BaseModel], source: SourceMap) -> str:
    """One pydantic error → ``file:line: message``."""
    etype = err["type"]
    raw_loc = tuple(err["loc"])
    if etype == "value_error" and isinstance(err.get("ctx", {}).get("error"), RecipeValueError):
        raw_loc = raw_loc + err["ctx"]["error"].loc
    loc, tp, last_field = _walk(root, raw_loc)
    where = _describe(_container_of(loc))
    ctx = err.get("ctx") or {}
    if etype == "extra_forbidden":
        parent_tp = _walk(root, raw_loc[:-1])[1]
        key = str(loc[-1])
        allowed = _allowed_keys(parent_tp)
        hint = _suggest(key, allowed) or f" (allowed: {', '.join(allowed)})"
        parent = _describe(_container_of(loc[:-1]))
        return source.prefix(loc, key=True) + f"unknown key {key!r} in {parent}{hint}"
    if etype == "missing":
        parent = _describe(_container_of(loc[:-1]))
        return source.prefix(loc[:-1], key=True) + (
            f"{parent} is missing required key {str(loc[-1])!r}"
        )
    if etype in ("union_tag_invalid", "union_tag_not_found"):
        disc = _quoted(ctx.get("discriminator", ""))[-1:] or ["type"]
        tags = _quoted(ctx.get("expected_tags", "")) or _union_tags(tp, disc[0])
        if etype == "union_tag_not_found":
            return source.prefix(loc) + (
                f"{where} needs a {disc[0]!r} key (one of: {', '.join(tags)})"
            )
        tag = str(ctx.get("tag"))
        hint = _suggest(tag, tags)
        return source.prefix((*loc, disc[0])) + (
            f"unsupported {disc[0]} {tag!r} in {where}{hint} (supported: {', '.join(tags)})"
        )
    if etype == "key" or (loc and loc[-1] == "[key]"):
        return source.prefix(loc[:-1], key=True) + f"names in {where} must be strings"
    label = _label(loc, last_field)
    if etype == "value_error":
        error = ctx.get("error", err["msg"])
        if isinstance(error, RecipeValueError) or last_field is None:
            return source.prefix(loc) + (f"{where}: {error}" if loc else f"{error}")
        return source.prefix(loc) + f"{label} in {where} {error}"
    if etype == "literal_error":
        options = _quoted(ctx.get("expected", ""))
        hint = _suggest(str(err["input"]), options)
        return source.prefix(loc) + (
            f"{label} in {where} must be one of {', '.join(map(repr, options))}, "
            f"got {err['input']!r}{hint}"
        )
    msg = re.sub(r"^Input should be", "must be", err["msg"])
    return source.prefix(loc) + f"{label} in {where} {msg}, got {err['input']!r}"


def _union_tags(tp: Any, discriminator: str) -> list[str]:
    """Allowed values of a discriminated union's tag field (by name or alias)."""
    tags: list[str] = []
    for member in typing.get_args(_unwrap(tp)):
        member = _unwrap(member)
        if isinstance(member, type) and issubclass(member, BaseModel):
            for name, info in member.model_fields.items():
                if discriminator in (name, info.alias):
                    tags += [str(v) for v in _literal_values(info.annotation)]
    return tags


def _line_of(message: str) -> int:
    m = re.match(r"^[^:]*:(\d+):", message)
    return int(m.group(1)) if m else 0


def raise_problems(source: SourceMap, lines: Iterable[str] = ()) -> None:
    """Raise one :class:`ConfigError` with ``lines`` and the file's duplicate keys, one line
    each in file order; do nothing when there are none."""
    found = list(dict.fromkeys([*source.duplicates, *lines]))
    if found:
        found.sort(key=_line_of)
        raise ConfigError("\n".join(found))


def format_validation_error(
    exc: ValidationError, root: type[BaseModel], source: SourceMap
) -> ConfigError:
    """Turn a pydantic :class:`ValidationError` into a :class:`ConfigError`, one line per error.

    A ``missing`` error next to an ``unknown key`` close to it (a typo) is dropped: the typo
    line already says what to fix.
    """
    errors = exc.errors()
    typos = {
        (tuple(e["loc"][:-1]), str(e["loc"][-1])) for e in errors if e["type"] == "extra_forbidden"
    }
    lines: list[str] = []
    for err in errors:
        if err["type"] == "missing":
            parent, name = tuple(err["loc"][:-1]), str(err["loc"][-1])
            typo_keys = [k for p, k in typos if p == parent]
            if difflib.get_close_matches(name, typo_keys, n=1, cutoff=0.6):
                continue
        line = _format_one(err, root, source)
        if line not in lines:
            lines.append(line)
    return ConfigError("\n".join(lines))
