"""Settings dataclasses as typed ``key=value`` overrides and as command-line options: one coercion.

Every settings dataclass of the toolkit (:class:`awp.config.TrainConfig`, the landscape's and the
measures' configs) is overridden the same way: a value given as text (a ``key=value`` pair, a
flag, a ``--set`` item) is parsed by the field's type hint, a typed value (a preset's TOML, a
config stored as JSON, a Python call) is checked against it; an unknown key names the closest
fields; a non-finite float is refused where it enters (JSON cannot store it, and ``lr=inf`` would
only fail epochs later). :func:`add_options` derives a command's flags from the dataclass fields
(``--sample-seed`` for ``sample_seed``), so a new field is a new flag with no other change, and
:func:`from_options` maps the flags given back onto the dataclass through the same coercion.

Fractions such as ``eps=8/255`` are accepted for floats (never an expression); lists and dicts are
JSON (``lr_milestones=[0.5,0.75]``); ``none`` / ``null`` set an optional field to None; a field may
name its own text parser in ``dataclasses.field(metadata={"parse": parser})`` (the landscape's
``--alphas -1:1:21``).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import re
import types
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, Union, get_args, get_origin, get_type_hints

from awp.errors import UsageError
from awp.registry import unknown_name


def parse_number(text: str) -> float:
    """'0.03' or a fraction such as '8/255' (never an expression); ValueError otherwise."""
    if "/" in text:
        num, _, den = text.partition("/")
        try:
            return float(num) / float(den)
        except ZeroDivisionError:
            raise ValueError(f"division by zero in {text!r}") from None
    return float(text)


@functools.lru_cache(maxsize=None)
def field_hints(cls: type) -> dict[str, Any]:
    """The resolved type hint of every field of the dataclass ``cls``."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _base(hint: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed) of a hint such as ``Optional[int]``."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else Union[tuple(args)]), type(None) in get_args(hint)
    return hint, False


def _finite(key: str, number: float) -> float:
    if not math.isfinite(number):
        raise UsageError(f"{key}={number!r} is not a finite number")
    return number


def _from_text(key: str, base: Any, text: str, parse: Callable[[str], Any] | None) -> Any:
    origin = get_origin(base) or base
    if parse is not None:
        return parse(text)
    if origin is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError
        return text.lower() in ("true", "1", "yes")
    if origin is int:
        return int(text)
    if origin is float:
        return _finite(key, parse_number(text))
    if origin in (list, dict, tuple):
        parsed = json.loads(text)
        if not isinstance(parsed, list if origin is tuple else origin):
            raise ValueError
        return _typed(key, base, parsed)
    return text


def _typed(key: str, base: Any, value: Any) -> Any:
    origin = get_origin(base) or base
    if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _finite(key, float(value))
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        items = get_args(base)
        if items and items[0] is float:  # list[float], tuple[float, ...]
            value = [_typed(key, float, v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                     for v in value]
        return tuple(value) if origin is tuple else list(value)
    if origin is dict and isinstance(value, dict):
        return value
    if origin is Any or (isinstance(origin, type) and isinstance(value, origin)
                         and not (origin is int and isinstance(value, bool))):
        return value
    raise ValueError


def coerce_value(key: str, hint: Any, value: Any, parse: Callable[[str], Any] | None = None) -> Any:
    """``value`` for a setting ``key`` of type ``hint``: text parsed (by ``parse`` when given), a
    typed value checked; one line when it does not fit. The one coercion of every setting."""
    base, optional = _base(hint)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise UsageError(f"{key} cannot be none")
    try:
        if isinstance(value, str):
            return _from_text(key, base, value, parse)
        return _typed(key, base, value)
    except (ValueError, TypeError, json.JSONDecodeError):
        name = getattr(get_origin(base) or base, "__name__", str(base))
        raise UsageError(f"{key}={value!r} is not a valid {name}") from None


def coerce(cls: type, key: str, value: Any) -> Any:
    """``value`` for field ``key`` of the dataclass ``cls`` (:func:`coerce_value` with the field's
    type hint and its ``parse`` metadata)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == key)
    return coerce_value(key, field_hints(cls)[key], value, field.metadata.get("parse"))


def check_keys(cls: type, keys: Sequence[str], what: str = "setting") -> None:
    """One line naming the closest fields unless every key is a field of ``cls``."""
    names = [f.name for f in dataclasses.fields(cls)]
    for key in keys:
        if key not in names:
            raise unknown_name(what, key, names, listing=f"the fields of {cls.__name__}")


def apply_overrides(obj: Any, overrides: Mapping[str, Any], what: str = "setting") -> Any:
    """A copy of the dataclass ``obj`` with typed overrides (the class's own checks run on it)."""
    check_keys(type(obj), list(overrides), what)
    return dataclasses.replace(obj, **{key: coerce(type(obj), key, value) for key, value in overrides.items()})


def parse_overrides(pairs: Sequence[str]) -> dict[str, str]:
    """['epochs=5', 'eps=8/255'] -> {'epochs': '5', 'eps': '8/255'}."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"expected key=value, got {pair!r}")
        result[key.strip()] = value.strip()
    return result


def flag(name: str) -> str:
    """The command-line flag of a field: ``sample_seed`` -> ``--sample-seed``."""
    return "--" + name.replace("_", "-")


def add_options(parser: argparse.ArgumentParser, cls: type, *, skip: Sequence[str] = (),
                aliases: Mapping[str, Sequence[str]] | None = None, helps: Mapping[str, str] | None = None,
                choices: Mapping[str, Iterable[str]] | None = None) -> None:
    """One option per field of ``cls`` (not in ``skip``): ``--field-name VALUE``, booleans as
    ``--field-name`` / ``--no-field-name``; ``aliases`` adds older flags of a field (they stay in
    users' scripts); ``choices`` names the registry of a field, whose names the help lists (the
    dataclass's own check refuses others, naming the closest). The value stays text until
    :func:`from_options` coerces it; the default is the dataclass's, shown in the help."""
    defaults = cls()
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        names = [flag(f.name), *(aliases or {}).get(f.name, ())]
        text = (helps or {}).get(f.name, f.name.replace("_", " "))
        if f.name in (choices or {}):
            text += f": {', '.join(choices[f.name])}"
        default = getattr(defaults, f.name)
        shown = "" if "default" in text else f" (default {_shown(default)})"
        if _base(field_hints(cls)[f.name])[0] is bool:
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=text + shown)
        else:
            parser.add_argument(*names, dest=f.name, default=None, metavar=f.name.upper(), help=text + shown)


def _shown(value: Any) -> str:
    if isinstance(value, tuple) and len(value) > 4 and all(isinstance(v, float) for v in value):
        return f"{value[0]:g}..{value[-1]:g}, {len(value)} values"
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def from_options(args: argparse.Namespace, cls: type, **fixed: Any) -> Any:
    """``cls`` from the defaults, ``fixed`` values and the options given on the command line
    (:func:`add_options`); a bad value is one line that names the flag, not the field."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
             if f.name not in fixed and getattr(args, f.name, None) is not None}
    with flag_names(cls):
        return cls(**{key: coerce(cls, key, value) for key, value in {**fixed, **given}.items()})


@functools.lru_cache(maxsize=None)
def _field_pattern(cls: type) -> re.Pattern:
    names = sorted((f.name for f in dataclasses.fields(cls)), key=len, reverse=True)
    return re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, names)) + r")(?![\w-])")


@contextlib.contextmanager
def flag_names(cls: type) -> Iterator[None]:
    """Within the block, a :class:`UsageError` about fields of ``cls`` names their flags instead
    (``samples must be >= 1`` -> ``--samples must be >= 1``): the messages of the dataclass's own
    checks serve the command line unchanged."""
    try:
        yield
    except UsageError as exc:
        raise UsageError(_field_pattern(cls).sub(lambda m: flag(m.group(1)), str(exc))) from None
