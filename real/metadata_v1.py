"""Reading schema version 1 of policy.json and converting it to the typed version 2 (`s2r.real.metadata`).

Version 1 was flat: joint-space action fields for every policy (`action_scale`, `action_offset`,
`default_joint_pos`, `joint_lower/upper`, `kp`, `kv`) and an untyped `extras` whose keys told the kinds of
policy apart (`chunk`, `residual`, `planner`). Conversion:

- `extras.planner` ("mfrl" with the settings beside it, or the settings as a mapping): a
  `segment_time_ratio` action, a `waypoints` command, a `planner` section, algo "mfrl";
- otherwise a `joint_position` action with the v1 fields; `extras.chunk` becomes the `chunking` section
  (algo "bc"), `extras.residual` the `residual` section (algo "residual"); else algo "ppo";
- a `velocity_command` observation term means a `velocity` command (ranges were not recorded), else `none`;
- every other `extras` key (v1 extras were free-form notes) moves to `info`.

A v1 file with a field version 1 never had is refused, naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from s2r.real.metadata import (
    ChunkingSection,
    JointPositionAction,
    MetadataError,
    NoCommand,
    ObsInput,
    PlannerSection,
    PolicyMetadata,
    ResidualSection,
    SegmentTimeRatioAction,
    TermSpec,
    VelocityCommand,
    WaypointsCommand,
)
from s2r.real.typed_json import parse

_PLANNER_KEYS = ("max_waypoints", "max_ratio", "feasibility_dt", "limits", "heuristic")


@dataclass(frozen=True, kw_only=True)
class MetadataV1:
    """policy.json schema version 1, field for field (read only; exports write version 2)."""

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

    def validate(self) -> None:
        """Version 1's own consistency checks, with its field names."""
        frame = sum(t.size for t in self.obs_terms)
        if frame * self.history_length != self.obs_dim:
            raise MetadataError(f"obs_dim {self.obs_dim} != sum of term sizes {frame} x history_length {self.history_length}")
        n = len(self.action_names)
        for name in ("action_scale", "action_offset", "default_joint_pos", "joint_lower", "joint_upper", "kp", "kv"):
            if len(getattr(self, name)) != n:
                raise MetadataError(f"'{name}' has {len(getattr(self, name))} values for {n} actions")


def convert_v1(raw: dict[str, Any]) -> PolicyMetadata:
    """Check a version 1 policy.json (parsed JSON) and convert it to version 2.

    Raises:
        MetadataError: An unknown, missing or mistyped v1 field, or malformed planner/chunk/residual extras.
    """
    v1 = parse(MetadataV1, raw, "", MetadataError)
    v1.validate()
    extras = dict(v1.extras or {})
    chunk, residual, tag = extras.pop("chunk", None), extras.pop("residual", None), extras.pop("planner", None)
    obs = ObsInput(name=v1.onnx_input, group="policy", terms=v1.obs_terms, history_length=v1.history_length,
                   shape=(v1.obs_dim,))
    names = v1.action_names
    common = {"task_id": v1.task_id, "robot": v1.robot, "control_dt": v1.control_dt, "observation": (obs,),
              "onnx_output": v1.onnx_output, "normalizer_in_graph": v1.normalizer_in_graph}
    if tag is not None:
        if isinstance(tag, dict):
            settings = dict(tag)
        elif tag == "mfrl":
            settings = {k: extras.pop(k) for k in _PLANNER_KEYS if k in extras}
        else:
            raise MetadataError(f"extras.planner is {tag!r}; version 1 planners say 'mfrl' or hold their settings there")
        missing = [k for k in ("max_waypoints", "max_ratio", "limits") if k not in settings]
        if missing:
            raise MetadataError(f"planner extras lack {missing}; re-export the planner")
        action = parse(SegmentTimeRatioAction, {"names": list(names), "max_ratio": settings.pop("max_ratio"),
                                                "max_waypoints": settings.pop("max_waypoints")}, "extras", MetadataError)
        meta = PolicyMetadata(**common, algo="mfrl", action=action, command=WaypointsCommand(),
                              planner=parse(PlannerSection, settings, "extras.planner", MetadataError), info=extras)
    else:
        action = JointPositionAction(names=names, scale=v1.action_scale, offset=v1.action_offset,
                                     default_pos=v1.default_joint_pos, lower=v1.joint_lower, upper=v1.joint_upper,
                                     kp=v1.kp, kv=v1.kv)
        velocity = any(t.name == "velocity_command" for t in v1.obs_terms)
        meta = PolicyMetadata(
            **common, algo="residual" if residual is not None else "bc" if chunk is not None else "ppo", action=action,
            command=VelocityCommand() if velocity else NoCommand(),
            chunking=None if chunk is None else parse(ChunkingSection, chunk, "extras.chunk", MetadataError),
            residual=None if residual is None else parse(ResidualSection, residual, "extras.residual", MetadataError),
            info=extras)
    meta.validate()
    return meta
