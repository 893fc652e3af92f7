"""Typed JSON: build frozen dataclasses from parsed JSON, refusing unknown, missing and mistyped fields by path.

Standard library only (the robot side reads its contracts with it). Supported annotations: dataclasses,
`Kinded` families (a dataclass chosen by the object's "kind" field from the family's registry), `tuple[T, ...]`,
fixed tuples, `dict[str, T]`, `T | None`, `Any`, and the scalars float, int, bool, str.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints


class Kinded:
    """Base of a family of dataclasses told apart in JSON by a "kind" field.

    A family subclasses this with its own `family` name and `registry` dict; each member sets `kind` and is
    added with `register_kind`.
    """

    kind: ClassVar[str]
    family: ClassVar[str]
    registry: ClassVar[dict[str, type]]


def register_kind(cls: type) -> type:
    """Add a member to its family's registry under `cls.kind`; a second class for one kind is an error."""
    registry = cls.registry
    if cls.kind in registry:
        raise ValueError(f"{cls.family} kind '{cls.kind}' is registered twice ({registry[cls.kind].__name__} and "
                         f"{cls.__name__})")
    registry[cls.kind] = cls
    return cls


def parse(tp: Any, value: Any, where: str, error: type[Exception]) -> Any:
    """Build `tp` from JSON `value`.

    Args:
        tp: Target type (as annotated).
        value: Parsed JSON.
        where: Path of `value` in the document, for messages ("" for the top level).
        error: Exception class raised on bad input.

    Raises:
        error: An unknown, missing or mistyped field, or an unknown kind, named by its path in one sentence.
    """
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            if len(args) < len(get_args(tp)):
                return None
            raise error(f"'{where}' must not be null")
        return parse(args[0], value, where, error)
    if isinstance(tp, type) and issubclass(tp, Kinded) and not dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise error(f"'{where}' must be an object with a 'kind' field, got {value!r}")
        kind = value.get("kind")
        if kind not in tp.registry:
            raise error(f"{tp.family} kind {kind!r} is not one this runtime knows; known kinds: {', '.join(tp.registry)}")
        return _parse_dataclass(tp.registry[kind], {k: v for k, v in value.items() if k != "kind"}, where, error)
    if dataclasses.is_dataclass(tp):
        return _parse_dataclass(tp, value, where, error)
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list):
            raise error(f"'{where}' must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(parse(args[0], v, f"{where}[{i}]", error) for i, v in enumerate(value))
        if len(value) != len(args):
            raise error(f"'{where}' must hold {len(args)} values, got {len(value)}")
        return tuple(parse(a, v, f"{where}[{i}]", error) for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise error(f"'{where}' must be an object, got {value!r}")
        return {k: parse(get_args(tp)[1], v, f"{where}.{k}", error) for k, v in value.items()}
    return _scalar(tp, value, where, error)


def dump(obj: Any) -> Any:
    """JSON-ready form of a dataclass tree (tuples as lists; a `Kinded` member with its "kind" first)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {"kind": obj.kind} if isinstance(obj, Kinded) else {}
        out.update({f.name: dump(getattr(obj, f.name)) for f in dataclasses.fields(obj)})
        return out
    if isinstance(obj, (tuple, list)):
        return [dump(v) for v in obj]
    if isinstance(obj, dict):
        return {k: dump(v) for k, v in obj.items()}
    return obj


_SCALARS: dict[Any, tuple[tuple[type, ...], str]] = {
    float: ((int, float), "a number"), int: ((int,), "an integer"), bool: ((bool,), "true or false"),
    str: ((str,), "a string"),
}


def _scalar(tp: Any, value: Any, where: str, error: type[Exception]) -> Any:
    if tp not in _SCALARS:
        raise TypeError(f"field '{where}' has a type typed JSON does not read: {tp!r}")
    ok, what = _SCALARS[tp]
    if not isinstance(value, ok) or (tp is not bool and isinstance(value, bool)):
        raise error(f"'{where}' must be {what}, got {value!r}")
    return float(value) if tp is float else value


def _parse_dataclass(cls: Any, value: Any, where: str, error: type[Exception]) -> Any:
    if not isinstance(value, dict):
        raise error(f"'{where}' must be an object, got {value!r}")
    hints = get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{where}." if where else ""
    for key in value:
        if key not in known:
            raise error(f"unknown field '{prefix}{key}' (known here: {', '.join(known)}); remove it or re-export")
    kw = {}
    for name, f in known.items():
        if name in value:
            kw[name] = parse(hints[name], value[name], prefix + name, error)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise error(f"missing field '{prefix}{name}'")
    return cls(**kw)
