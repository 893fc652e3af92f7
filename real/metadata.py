"""The policy metadata contract (`policy.json`) between export (training side) and the robot runtime.

Written by `s2r.policies.export`, read here with the standard library only, so the robot computer needs no
training dependencies to check a policy before it runs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from s2r.real.documents import read_document

SCHEMA_VERSION = 1


class MetadataError(ValueError):
    """A policy.json that is missing, malformed or does not match what it is used with."""


@dataclass(frozen=True, kw_only=True)
class TermSpec:
    """One observation term: where it sits in the input vector and how it is scaled."""

    name: str
    start: int
    size: int
    scale: tuple[float, ...]
    offset_from_default: bool = False


@dataclass(frozen=True, kw_only=True)
class PolicyMetadata:
    """Everything the robot side needs to run an exported policy.

    The ONNX graph takes `obs` of shape (batch, obs_dim) holding `history_length` frames of the terms
    (oldest first), already scaled per term; normalisation is inside the graph. It returns `actions`
    (batch, action_dim); joint targets are `action_offset + action_scale * actions`.
    """

    schema_version: int
    task_id: str
    robot: str
    obs_dim: int
    obs_terms: tuple[TermSpec, ...]
    history_length: int
    action_names: tuple[str, ...]
    action_scale: tuple[float, ...]
    action_offset: tuple[float, ...]
    default_joint_pos: tuple[float, ...]
    joint_lower: tuple[float, ...]
    joint_upper: tuple[float, ...]
    kp: tuple[float, ...]
    kv: tuple[float, ...]
    control_dt: float
    onnx_input: str = "obs"
    onnx_output: str = "actions"
    normalizer_in_graph: bool = True
    extras: dict[str, Any] | None = None

    def to_json(self) -> str:
        """Serialise with stable key order."""
        return json.dumps(asdict(self), indent=2)

    def validate(self) -> None:
        """Check internal consistency; raises MetadataError naming the field."""
        frame = sum(t.size for t in self.obs_terms)
        if frame * self.history_length != self.obs_dim:
            raise MetadataError(
                f"obs_dim {self.obs_dim} != sum of term sizes {frame} x history_length {self.history_length}"
            )
        pos = 0
        for t in self.obs_terms:
            if t.start != pos:
                raise MetadataError(f"observation term '{t.name}' starts at {t.start}, expected {pos}")
            pos += t.size
        n = len(self.action_names)
        for name in ("action_scale", "action_offset", "default_joint_pos", "joint_lower", "joint_upper", "kp", "kv"):
            if len(getattr(self, name)) != n:
                raise MetadataError(f"'{name}' has {len(getattr(self, name))} values for {n} actions")
        if not self.control_dt > 0:
            raise MetadataError(f"control_dt must be positive, got {self.control_dt}")


def load_metadata(path: str | Path) -> PolicyMetadata:
    """Read and validate a policy.json.

    Raises:
        MetadataError: Missing file, bad JSON, unknown schema version, missing or extra fields.
    """
    path = Path(path)
    raw = read_document(path, MetadataError, "policy metadata", "(export writes it next to policy.onnx)")
    if not isinstance(raw, dict):
        raise MetadataError(f"{path} must hold a JSON object, found {type(raw).__name__}")
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise MetadataError(
            f"{path} has schema_version {raw.get('schema_version')!r}; this runtime reads {SCHEMA_VERSION}"
        )
    fields = set(PolicyMetadata.__dataclass_fields__)
    unknown = set(raw) - fields
    if unknown:
        raise MetadataError(f"{path} has unknown fields {sorted(unknown)}")
    try:
        terms = tuple(TermSpec(**{**t, "scale": tuple(t["scale"])}) for t in raw["obs_terms"])
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k != "obs_terms"}
        meta = PolicyMetadata(obs_terms=terms, **kw)
    except (KeyError, TypeError, AttributeError) as exc:
        raise MetadataError(f"{path} is missing or has malformed fields: {exc}") from exc
    _check_types(meta, path)
    meta.validate()
    return meta


def _check_types(meta: PolicyMetadata, path: Path) -> None:
    """JSON carries no types: refuse a string where a number belongs before anything computes with it."""
    numeric = ("action_scale", "action_offset", "default_joint_pos", "joint_lower", "joint_upper", "kp", "kv")
    for name in numeric:
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in getattr(meta, name)):
            raise MetadataError(f"{path}: '{name}' must be a list of numbers")
    for name in ("obs_dim", "history_length", "schema_version"):
        if not isinstance(getattr(meta, name), int) or isinstance(getattr(meta, name), bool):
            raise MetadataError(f"{path}: '{name}' must be an integer, got {getattr(meta, name)!r}")
    if not isinstance(meta.control_dt, (int, float)) or isinstance(meta.control_dt, bool):
        raise MetadataError(f"{path}: 'control_dt' must be a number of seconds, got {meta.control_dt!r}")
    if not all(isinstance(n, str) for n in meta.action_names):
        raise MetadataError(f"{path}: 'action_names' must be a list of strings")
    for t in meta.obs_terms:
        if not isinstance(t.start, int) or not isinstance(t.size, int) or not all(
                isinstance(v, (int, float)) for v in t.scale):
            raise MetadataError(f"{path}: observation term '{t.name}' has a non-numeric start, size or scale")
