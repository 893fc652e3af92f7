"""Helpers for typed, frozen configs: overrides that fail loudly on unknown keys."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any


class ConfigError(ValueError):
    """A config key or value that cannot be applied."""


def apply_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """Return a copy of `cfg` with dotted keys replaced, e.g. {"rewards.feet_air_time": 0.5}.

    Raises:
        ConfigError: A key names no field (the message names the closest fields) or a value has the
            wrong type.
    """
    for key, value in overrides.items():
        cfg = _replace_path(cfg, key.split("."), value, key)
    return cfg


def _replace_path(cfg: Any, path: list[str], value: Any, full: str) -> Any:
    if isinstance(cfg, dict):
        # A parameter table (e.g. a reward term's params): its keys are fixed by the config, like fields.
        head = path[0]
        if head not in cfg:
            close = difflib.get_close_matches(head, list(cfg), n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else f" Known keys: {', '.join(cfg) or '(none)'}."
            raise ConfigError(f"unknown config key '{full}'.{hint}")
        if len(path) > 1:
            return {**cfg, head: _replace_path(cfg[head], path[1:], value, full)}
        return {**cfg, head: _coerce(cfg[head], value, full)}
    if not dataclasses.is_dataclass(cfg):
        raise ConfigError(f"config key '{full}': '{path[0]}' is below a value that is not a config section")
    names = [f.name for f in dataclasses.fields(cfg)]
    head = path[0]
    if head not in names:
        close = difflib.get_close_matches(head, names, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else f" Known keys: {', '.join(names)}."
        raise ConfigError(f"unknown config key '{full}' in {type(cfg).__name__}.{hint}")
    current = getattr(cfg, head)
    if len(path) > 1:
        return dataclasses.replace(cfg, **{head: _replace_path(current, path[1:], value, full)})
    optional, inner = _optional_kind(type(cfg), head)
    if optional and isinstance(value, str) and value.strip().lower() in ("none", "null"):
        return dataclasses.replace(cfg, **{head: None})
    if inner is not None and (current is None or isinstance(value, str)):
        # An `X | None` field: the value's type comes from the annotation (the current value may be None), and the
        # error says that none is allowed too.
        try:
            return dataclasses.replace(cfg, **{head: inner(value)})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config key '{full}' wants {inner.__name__} or none, got {value!r}") from exc
    return dataclasses.replace(cfg, **{head: _coerce(current, value, full, _fixed_length(type(cfg), head),
                                                     _tuple_kind(type(cfg), head))})


def _optional_kind(cls: type, name: str) -> tuple[bool, type | None]:
    """(whether field `name` may be None, its scalar type X when annotated `X | None` with X int/float/str)."""
    try:
        args = typing.get_args(typing.get_type_hints(cls)[name])
    except Exception:  # unresolvable annotations: not treated as optional
        return False, None
    if type(None) not in args:
        return False, None
    rest = [a for a in args if a is not type(None)]
    return True, rest[0] if len(rest) == 1 and rest[0] in (int, float, str) else None


def _fixed_length(cls: type, name: str) -> int | None:
    """How many values field `name` must hold when annotated as a fixed tuple (`tuple[float, float]`)."""
    try:
        hint = typing.get_type_hints(cls)[name]
    except Exception:  # unresolvable annotations: no arity check
        return None
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and args and Ellipsis not in args:
        return len(args)
    return None


def _tuple_kind(cls: type, name: str) -> type | None:
    """The element type of a field annotated `tuple[X, ...]` (so an empty default still coerces to X, e.g. str)."""
    try:
        args = typing.get_args(typing.get_type_hints(cls)[name])
    except Exception:  # unresolvable annotations: the caller falls back to the current value's type
        return None
    return args[0] if len(args) == 2 and args[1] is Ellipsis and isinstance(args[0], type) else None


def _coerce(current: Any, value: Any, full: str, length: int | None = None, kind: type | None = None) -> Any:
    if dataclasses.is_dataclass(current):
        shorthand = getattr(type(current), "SHORTHAND_FIELD", None)
        if shorthand and not isinstance(value, dict):
            # A section with a main value (a reward term's weight) takes that value alone.
            return dataclasses.replace(current, **{shorthand: _coerce(getattr(current, shorthand), value, full)})
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{full}' is a section; give sub-keys, not {value!r}")
        return apply_overrides(current, {k: v for k, v in value.items()})
    if isinstance(current, bool):
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{full}' wants true/false, got {value!r}")
    try:
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, tuple):
            if isinstance(value, str):
                value = [v.strip() for v in value.strip("()[] ").split(",") if v.strip()]
            kind = type(current[0]) if current else kind or float
            out = tuple(kind(v) for v in value)
        else:
            return value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key '{full}' wants {type(current).__name__}, got {value!r}") from exc
    if length is not None and len(out) != length:
        # e.g. a (low, high) range given one number would silently change meaning downstream
        raise ConfigError(f"config key '{full}' wants {length} values, got {len(out)}: {value!r}")
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain nested dicts (for logs and checkpoints)."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build config `cls` from nested dicts, refusing unknown keys.

    A config class whose saved layout changed converts older dicts first in a `upgrade_dict(data)` classmethod.
    """
    upgrade = getattr(cls, "upgrade_dict", None)
    if upgrade is not None:
        data = upgrade(data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown config keys for {cls.__name__}: {sorted(unknown)}")
    kwargs = {}
    for k, v in data.items():
        t = hints.get(k)
        if isinstance(t, type) and dataclasses.is_dataclass(t) and isinstance(v, dict):
            kwargs[k] = from_dict(t, v)
        elif isinstance(v, list):
            kwargs[k] = tuple(v)
        else:
            kwargs[k] = v
    return cls(**kwargs)
