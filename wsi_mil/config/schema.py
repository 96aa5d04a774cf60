"""Dataclasses as the one schema of every parameter: values checked against type hints, and
each field's documentation read from its ``#:`` comment.

Every stage keeps its user-settable parameters in a frozen dataclass (``TilingParams``,
``TrainParams``, ...). Both ways in are generated from it: the YAML sections of ``wsi-mil run``
(:func:`build_dataclass`) and the flags of each verb (``wsi_mil.cli.options``), with the same
names, defaults and help text (:func:`field_comments`).

Why not pydantic or jsonargparse: both would add a heavy import to every ``wsi-mil`` call
(``wsi-mil --help`` must answer at once), pydantic's errors do not suggest the key a user
meant ("did you mean 'tile_size'?"), and neither reads ``#:`` attribute comments, the
documentation convention Sphinx autodoc uses, which is what keeps the help text and the shipped
``configs/default.yaml`` in one place. The checking here is small: the types the stages use.

**Constraints are declared on the field, checked in one place.** Every enumerated setting is a
``typing.Literal``; a numeric range is declared with :func:`constrained` (``epochs: int =
constrained(50, ge=1)``). :func:`check_fields`, called first by every parameter class's
``__post_init__``, checks both for a value from YAML, a flag or Python alike, and names the
class, the key, the value and what is allowed; :func:`allowed` gives the same text to ``--help``
and the configuration reference. A parameter class keeps a hand-written check only for what
involves several fields (``positional`` needs ``model: transformer_mil``).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import enum
import functools
import inspect
import os
import types
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wsi_mil.errors import WsiMilError


class ConfigError(WsiMilError, ValueError):
    """A config file that cannot be read or does not match the schema; the message says where."""


_BOUND_TEXT = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def constrained(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: typing.Sequence[Any] | None = None,
    doc: str | None = None,
) -> Any:
    """A dataclass field whose value (or, for a tuple, each item) must lie in the given range,
    or be one of ``choices`` (for a list known only at run time, such as the registered models;
    a fixed list is a ``Literal``). ``None`` is allowed when the field's type allows it. ``doc``
    documents a field defined once and shared by several classes (a ``#:`` comment on the
    field wins)."""
    bounds = {
        name: value
        for name, value in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt))
        if value is not None
    }
    metadata: dict[str, Any] = {"bounds": bounds}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if doc is not None:
        metadata["doc"] = doc
    return dataclasses.field(default=default, metadata=metadata)


def _range_text(bounds: Mapping[str, float]) -> str:
    low = bounds.get("ge", bounds.get("gt"))
    high = bounds.get("le", bounds.get("lt"))
    if low is not None and high is not None:
        left = "[" if "ge" in bounds else "("
        right = "]" if "le" in bounds else ")"
        return f"in {left}{low:g}, {high:g}{right}"
    return " and ".join(f"{_BOUND_TEXT[name]} {value:g}" for name, value in bounds.items())


def _choices(annotation: Any) -> tuple[Any, ...] | None:
    """The values of the ``Literal`` inside ``annotation`` (``X | None``, ``tuple[X, ...]``)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType, tuple, list):
        for arg in typing.get_args(annotation):
            if arg is not type(None) and arg is not Ellipsis:
                found = _choices(arg)
                if found is not None:
                    return found
    return None


def field_choices(f: dataclasses.Field, annotation: Any) -> tuple[Any, ...] | None:
    """The values a field may take: its ``Literal``'s, or the ``choices`` it was declared with."""
    return f.metadata.get("choices") or _choices(annotation)


def allowed(f: dataclasses.Field, annotation: Any) -> str:
    """What a field accepts beyond its type (``one of a, b`` / ``>= 1`` / ``in [0, 1]``), or an
    empty string: the same words in errors, ``--help`` and the configuration reference."""
    choices = field_choices(f, annotation)
    parts = [f"one of {', '.join(str(c) for c in choices)}"] if choices else []
    if f.metadata.get("bounds"):
        parts.append(_range_text(f.metadata["bounds"]))
    return "; ".join(parts)


@functools.cache
def _hints(cls: type) -> Mapping[str, Any]:
    return types.MappingProxyType(typing.get_type_hints(cls))


def _within(
    value: Any, annotation: Any, bounds: Mapping[str, float], choices: tuple[Any, ...] | None
) -> bool:
    if value is None:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = options[0] if len(options) == 1 else Any
    if isinstance(value, (tuple, list)):
        inner = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return all(_within(v, inner[0] if len(inner) == 1 else Any, bounds, choices) for v in value)
    choices = choices or _choices(annotation)
    if choices is not None and value not in choices:
        return False
    if bounds and isinstance(value, (int, float)) and not isinstance(value, bool):
        checks = {
            "ge": value >= bounds.get("ge", value),
            "gt": "gt" not in bounds or value > bounds["gt"],
            "le": value <= bounds.get("le", value),
            "lt": "lt" not in bounds or value < bounds["lt"],
        }
        return all(checks.values())
    return True


def field_problem(f: dataclasses.Field, annotation: Any, value: Any) -> str | None:
    """What is wrong with ``value`` for field ``f`` (``must be >= 1``), or None when it is
    allowed: its choices (``Literal`` or declared) and its range."""
    choices, bounds = f.metadata.get("choices"), f.metadata.get("bounds", {})
    if _within(value, annotation, bounds, choices):
        return None
    bad, each = value, ""
    if isinstance(value, (tuple, list)):  # name the first wrong item
        bad = next(v for v in value if not _within((v,), annotation, bounds, choices))
        each = f"{bad!r} is not allowed, each item "
    hint = (
        suggest(bad, [str(c) for c in field_choices(f, annotation) or ()])
        if isinstance(bad, str)
        else ""
    )
    return f"{each}must be {allowed(f, annotation)}{hint}"


def check_fields(params: Any) -> None:
    """Every field of a parameter dataclass against its declared choices (``Literal``) and range
    (:func:`constrained`); a ``ValueError`` naming the class, the key, the value and what is
    allowed. Called first by each parameter class's ``__post_init__``."""
    cls: type = type(params)
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        value = getattr(params, f.name)
        problem = field_problem(f, hints[f.name], value)
        if problem:
            raise ValueError(f"{cls.__name__}.{f.name} = {value!r}: {problem}")


def suggest(key: str, candidates: typing.Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or an empty string when none is close."""
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _fail(where: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"{where.rstrip(':')}: {message}")


def _child(where: str, name: str) -> str:
    """The location of key ``name`` inside ``where`` (``file.yaml: tiling`` -> ``...tiling.x``;
    at the top level, ``file.yaml:`` -> ``file.yaml: x``)."""
    if not where:
        return name
    return f"{where} {name}" if where.endswith(":") else f"{where}.{name}"


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` (as YAML gives it) converted to ``annotation``, or a :class:`ConfigError`.

    ``where`` names the file, section and key in the message (``file: tiling.tile_size``).
    """
    if annotation is Any or annotation is object:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # X | None: X's own error, unwrapped
            return coerce(value, options[0], where)
        errors = []
        for option in options:
            try:
                return coerce(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc).removeprefix(f"{where}: "))
        _fail(where, " or ".join(errors))
    if origin is typing.Literal:
        if value in args:
            return value
        hint = suggest(str(value), [str(a) for a in args]) if isinstance(value, str) else ""
        _fail(where, f"{value!r} is not one of {list(args)}{hint}")
    if value is None:
        _fail(where, f"must be {_type_name(annotation)}, not empty (null)")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            _fail(where, f"must be a list, not {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                _fail(where, f"must be a list of {len(args)} values, not {list(value)!r}")
            items = [coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_type = args[0] if args else Any
            items = [coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or annotation is dict:
        if not isinstance(value, Mapping):
            _fail(where, f"must be a mapping, not {value!r}")
        value_type = args[1] if len(args) == 2 else Any
        return {str(k): coerce(v, value_type, _child(where, str(k))) for k, v in value.items()}
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return build_dataclass(annotation, value, where=where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        _fail(where, f"must be true or false, not {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        _fail(where, f"must be an integer, not {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        _fail(where, f"must be a number, not {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        _fail(where, f"must be a string, not {value!r}")
    if annotation is Path or annotation is os.PathLike:
        if isinstance(value, (str, Path)) and str(value):
            return Path(value).expanduser()
        _fail(where, f"must be a path, not {value!r}")
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        names = [m.value for m in annotation]
        if value in names:
            return annotation(value)
        hint = suggest(str(value), [str(n) for n in names])
        _fail(where, f"{value!r} is not one of {names}{hint}")
    _fail(where, f"cannot set a value of type {_type_name(annotation)} from a config file")


def _nested_keys(cls: type, hints: Mapping[str, Any]) -> list[str]:
    """``section.key`` for the keys of the dataclass sections of ``cls``: a key given at the
    wrong level (``epochs`` at the top) is suggested where it belongs (``train.epochs``)."""
    keys = []
    for f in dataclasses.fields(cls):
        options = typing.get_args(hints[f.name]) or (hints[f.name],)
        for option in options:
            if dataclasses.is_dataclass(option) and isinstance(option, type):
                keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(option)]
    return keys


def suggest_nested(key: str, candidates: list[str]) -> str:
    """Like :func:`suggest`, matching ``key`` against the last part of ``section.key``."""
    by_leaf: dict[str, str] = {}
    for candidate in candidates:
        by_leaf.setdefault(candidate.rsplit(".", 1)[-1], candidate)
    close = difflib.get_close_matches(key, list(by_leaf), n=1, cutoff=0.75)
    return f" (did you mean '{by_leaf[close[0]]}'?)" if close else ""


def build_dataclass(cls: type, data: Any, *, where: str) -> Any:
    """An instance of the dataclass ``cls`` from a YAML mapping, every key checked.

    A missing or empty section gives the defaults. Unknown keys, values of the wrong type, a
    missing required field and a ``ValueError`` raised by the dataclass's own validation all
    become a :class:`ConfigError` that names ``where`` and the key.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        _fail(where, f"must be a mapping of keys to values, not {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    data = _renamed_keys(cls, data, where)
    unknown = [str(k) for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        section = (
            where.rsplit(" ", 1)[-1].rstrip(":")
            if where and not where.endswith(":")
            else "the top level"
        )
        valid = ", ".join(f.name for f in ordered_fields(cls))
        hint = suggest(key, fields) or suggest_nested(key, _nested_keys(cls, hints))
        _fail(
            _child(where, key),
            f"unknown key{hint}; valid keys in "
            f"{section if section == 'the top level' else repr(section)}: {valid}",
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = coerce(value, hints[name], _child(where, name))
        problem = field_problem(fields[name], hints[name], kwargs[name])
        if problem:  # the key's own place in the file, before the class sees it
            _fail(_child(where, name), f"{kwargs[name]!r}: {problem}")
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        _fail(where or "config", f"missing required key(s): {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        _fail(where or "config", str(exc))


def _renamed_keys(cls: type, data: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """``data`` with the former keys of ``cls.RENAMED`` (old -> new) under their new names, each
    with a one-line deprecation warning; both spellings at once is an error."""
    renamed = getattr(cls, "RENAMED", {})
    for old in [k for k in data if k in renamed]:
        new = renamed[old]
        if new in data:
            _fail(_child(where, old), f"the former name of {new!r}: give only {new}")
        warnings.warn(
            f"{_child(where, old)}: deprecated key, goes in the next release: use {new}",
            FutureWarning,
            stacklevel=3,
        )
        data = {(new if k == old else k): v for k, v in data.items()}
    return data


def ordered_fields(cls_or_obj: Any) -> list[dataclasses.Field]:
    """A dataclass's fields, its own first and then its bases' (``encoder`` before batch size,
    ``target_mpp`` before the tissue-detection details): the order a reader wants."""
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    order = [k for k in cls.__mro__ if dataclasses.is_dataclass(k)]
    own: dict[str, int] = {}
    for rank, klass in enumerate(order):
        for name in getattr(klass, "__annotations__", {}):
            own.setdefault(name, rank)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    return sorted(fields, key=lambda f: own.get(f.name, len(order)))


@functools.cache
def _module_classes(path: str) -> tuple[list[str], dict[str, ast.ClassDef]]:
    """(source lines, top-level class name -> node) of a module file, parsed once: the parser
    of every verb reads the field comments of a dozen classes from a few files."""
    source = Path(path).read_text(encoding="utf-8")
    tree = ast.parse(source)
    return source.splitlines(), {
        node.name: node for node in tree.body if isinstance(node, ast.ClassDef)
    }


@functools.cache
def field_comments(cls: type) -> Mapping[str, str]:
    """Each field's comment in the source of ``cls`` and its dataclass bases.

    Stage dataclasses document a field with comment lines (``#:`` or ``#``) right above it or
    a ``#`` comment after it; a field right below a commented one, with no comment of its own,
    shares that comment. The shipped YAML configs reuse exactly that text, so the
    documentation of a key lives in one place (the dataclass) and cannot drift from it.
    """
    comments: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        try:
            source, classes = _module_classes(inspect.getfile(klass))
        except (OSError, TypeError):
            continue
        node_of_class = classes.get(klass.__name__)
        if node_of_class is None:
            continue
        own_fields = {f.name: f for f in dataclasses.fields(klass)}
        previous: tuple[str, int] | None = None  # (name, last line) of the field above
        for node in node_of_class.body:
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            line = source[node.lineno - 1]
            above: list[str] = []
            k = node.lineno - 2
            while k >= 0 and source[k].strip().startswith("#"):
                above.insert(0, source[k].strip().lstrip("#:").strip())
                k -= 1
            inline = ""
            if "#" in line[node.end_col_offset :]:
                inline = line[node.end_col_offset :].split("#", 1)[1].strip()
            text = " ".join(above) or inline
            shared = own_fields.get(node.target.id)
            if not text and shared is not None and "doc" in shared.metadata:
                text = shared.metadata["doc"]  # a field defined once for several classes
            if not text and previous is not None and previous[1] == node.lineno - 1:
                text = comments.get(previous[0], "")  # one comment over a group of fields
            if text:
                comments[node.target.id] = text
            previous = (node.target.id, node.end_lineno or node.lineno)
    return types.MappingProxyType(comments)  # cached: read-only
