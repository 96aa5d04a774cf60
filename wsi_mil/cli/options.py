"""A verb's flags generated from a stage's parameter dataclass, so flags and YAML keys agree.

``add_options(parser, TrainParams)`` adds one ``--field-name`` flag per field, with the field's
``#:`` comment as help text and its default shown; ``options_from_args(TrainParams, args)``
builds the dataclass from the flags that were given (the rest keep their defaults). The YAML
runner maps the same dataclasses by the same field names (:mod:`wsi_mil.config.schema`), so
``--tile-size 224`` and ``tiling: {tile_size: 224}`` are one parameter with one default.

Flags of nested dataclass fields carry the field's name as a prefix (``--froc-dilation-um``
for ``evaluate: {froc: {dilation_um: ...}}``). Booleans are ``--x`` / ``--no-x``; a field that
may be None accepts ``none``.

A renamed flag keeps its old spelling for one release (:func:`add_renamed`, and a params
class's ``RENAMED`` for its fields, which also keeps the old YAML key): it does what the new
one does, is left out of ``--help`` and prints a one-line notice on stderr when used.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from wsi_mil.config.schema import allowed, field_comments, ordered_fields
from wsi_mil.errors import WsiMilError

#: Separates a nested field from its parent in argparse ``dest`` names (``froc.dilation_um``).
_NEST = "."


class OptionError(WsiMilError, ValueError):
    """Flags that do not make valid parameters (the dataclass's own check failed)."""


def _optional(hint: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether None is allowed)."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else hint), len(args) < len(typing.get_args(hint))
    return hint, False


def _is_dataclass_type(hint: Any) -> bool:
    return dataclasses.is_dataclass(hint) and isinstance(hint, type)


def _converter(kind: Any, nullable: bool) -> Callable[[str], Any]:
    if typing.get_origin(kind) is typing.Literal:  # the values' type; argparse checks choices
        kind = type(typing.get_args(kind)[0])
    base: Callable[[str], Any] = Path if kind is Path else kind

    def convert(text: str) -> Any:
        if nullable and text.lower() in ("none", "null"):
            return None
        try:
            return base(text)
        except ValueError as exc:
            name = getattr(kind, "__name__", str(kind))
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {name}") from exc

    convert.__name__ = getattr(kind, "__name__", "value")  # argparse names it in errors
    return convert


class _ListAction(argparse.Action):
    """A list flag that takes ``a b c`` or ``a,b,c`` (as the YAML list ``[a, b, c]``)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        items = [part.strip() for value in values for part in str(value).split(",")]
        convert = self.metadata_type
        try:
            setattr(namespace, self.dest, [convert(item) for item in items if item])
        except argparse.ArgumentTypeError as exc:
            parser.error(f"{option_string}: {exc}")

    metadata_type: Callable[[str], Any] = str


class _DeprecatedFlag(argparse.Action):
    """The old spelling of a renamed flag: stores what the new one stores, and says so."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str, **kwargs: Any):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(
            f"{parser.prog}: {option_string} is deprecated and goes in the next release: "
            f"use {self.new}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def add_renamed(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, new: str, old: str, **kwargs: Any
) -> argparse.Action:
    """The flag ``new`` (``kwargs`` as ``add_argument`` takes them) and its former spelling
    ``old``, which still works for one release (see the module docstring); given both, argparse
    says they exclude each other. Returns the new flag's action."""
    required = kwargs.pop("required", False)
    group = parser.add_mutually_exclusive_group(required=required)
    action = group.add_argument(new, **kwargs)
    same = {key: kwargs[key] for key in ("type", "nargs") if key in kwargs}
    group.add_argument(
        old,
        dest=action.dest,
        action=_DeprecatedFlag,
        new=new,
        metavar=action.metavar,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
        **same,
    )
    return action


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def _argument(f: dataclasses.Field, hint: Any, doc: str) -> tuple[dict[str, Any], Any]:
    """argparse keyword arguments for one (non-dataclass) field, and its default."""
    kind, nullable = _optional(hint)
    default = _default_of(f)
    kwargs: dict[str, Any] = {}
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif origin is typing.Literal:
        kwargs.update(choices=list(args), type=_converter(type(args[0]), nullable))
    elif origin in (tuple, list):
        fixed = origin is tuple and args and args[-1] is not Ellipsis
        item = _converter(args[0] if args else str, nullable)
        if fixed:
            kwargs.update(nargs=len(args), type=item)
        else:
            action = type(
                "ListOf" + item.__name__, (_ListAction,), {"metadata_type": staticmethod(item)}
            )
            kwargs.update(nargs="+", action=action)
    else:
        kwargs["type"] = _converter(kind, nullable)
    shown = "required" if default is dataclasses.MISSING else f"default: {_show(default)}"
    # What is allowed: argparse lists a Literal's choices itself; a range, the choices of a
    # list flag and the choices known at run time (the models) are checked by the class
    # (check_fields), whose error names the key, so they are only shown here.
    rules = [] if "choices" in kwargs else [allowed(f, hint)]
    shown = "; ".join([shown, *filter(None, rules)])
    text = f"{doc} ({shown})" if doc else f"({shown})"
    kwargs["help"] = text.replace("%", "%%")  # argparse formats help with %
    return kwargs, default


def option_fields(cls: type, prefix: str = "") -> Iterable[tuple[str, dataclasses.Field, Any, str]]:
    """(dest, field, type hint, documentation) of every flag ``cls`` gives, nested ones flattened."""
    docs = field_comments(cls)
    hints = typing.get_type_hints(cls)
    for f in ordered_fields(cls):
        hint = hints[f.name]
        inner, _ = _optional(hint)
        if _is_dataclass_type(inner):
            yield from option_fields(inner, prefix=f"{prefix}{f.name}{_NEST}")
        else:
            yield f"{prefix}{f.name}", f, hint, docs.get(f.name, "")


def flag_name(dest: str) -> str:
    """``froc.dilation_um`` -> ``--froc-dilation-um``."""
    return "--" + dest.replace(_NEST, "-").replace("_", "-")


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    exclude: Iterable[str] = (),
    positional: Iterable[str] = (),
    flags: dict[str, str] | None = None,
) -> None:
    """One flag per field of ``cls`` (see the module docstring); ``positional`` fields become
    positional arguments (``tile INPUT...``), ``exclude`` ones are left to the verb. ``flags``
    names a field's flag where the verbs share a name that is not the field's (``evaluate
    --annotations`` for ``annotations_dir``, as the other verbs spell it); the field's own
    spelling stays as a former one for a release."""
    exclude, positional, flags = set(exclude), set(positional), flags or {}
    renamed = {new: old for old, new in getattr(cls, "RENAMED", {}).items()}
    for dest, f, hint, doc in option_fields(cls):
        if dest in exclude:
            continue
        kwargs, _ = _argument(f, hint, doc)
        if dest in positional:
            kwargs.pop("help")
            parser.add_argument(
                dest, help=doc.replace("%", "%%"), metavar=dest.removesuffix("s").upper(), **kwargs
            )
        elif dest in flags:
            add_renamed(
                parser, flags[dest], flag_name(dest), dest=dest, default=argparse.SUPPRESS, **kwargs
            )
        elif dest in renamed:
            add_renamed(
                parser,
                flag_name(dest),
                flag_name(renamed[dest]),
                dest=dest,
                default=argparse.SUPPRESS,
                **kwargs,
            )
        else:
            parser.add_argument(flag_name(dest), dest=dest, default=argparse.SUPPRESS, **kwargs)


def _given(cls: type, values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The constructor arguments of ``cls`` found in ``values`` (nested dataclasses built)."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        dest = f"{prefix}{f.name}"
        inner, _ = _optional(hints[f.name])
        if _is_dataclass_type(inner):
            nested = _given(inner, values, prefix=f"{dest}{_NEST}")
            if nested:
                kwargs[f.name] = inner(**nested)
        elif dest in values:
            value = values[dest]
            origin = typing.get_origin(_optional(hints[f.name])[0])
            kwargs[f.name] = tuple(value) if origin is tuple and value is not None else value
    return kwargs


def options_from_args(cls: type, args: argparse.Namespace, **fixed: Any) -> Any:
    """An instance of ``cls`` from the flags given in ``args`` (and ``fixed`` values, which win);
    the dataclass's own validation errors become an :class:`OptionError` naming the flag."""
    kwargs = _given(cls, vars(args))
    kwargs.update(fixed)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise OptionError(str(exc)) from exc
