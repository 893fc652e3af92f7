"""The policy metadata contract (`policy.json`) between export (training side) and the robot runtime.

Written by `s2r.policies.export` (and the bc, residual and mfrl exports), read here with the standard library
only, so the robot computer needs no training dependencies to check a policy before it runs.

Schema version 2, one typed section per concern::

    schema_version  2
    task_id, robot  the task it was trained on and the robot that task models
    algo            the algorithm id that trained it ("ppo", "bc", "residual", "mfrl", "sac", ...)
    control_dt      s between policy steps
    observation     one entry per ONNX input: the env group it is fed from, its terms, history length,
                    shape, dtype and (images) camera
    action          a typed action kind, chosen by its "kind" field (`ACTION_KINDS`)
    command         a typed command kind, chosen by its "kind" field (`COMMAND_KINDS`)
    onnx_output     the graph output holding the actions; the normaliser is inside the graph
    chunking, residual, planner   optional typed sections (null when the policy is not of that sort)
    info            free-form notes (evaluation counts, the training task config); the runtime never reads it

Version 1 files (a flat joint-space layout with an untyped `extras`) are read and converted on load
(`s2r.real.metadata_v1`). Every refusal is one sentence naming the file and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from s2r.real.documents import read_document
from s2r.real.typed_json import Kinded, dump, parse, register_kind

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)


class MetadataError(ValueError):
    """A policy.json that is missing, malformed or does not match what it is used with."""


# ---- observation layout -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TermSpec:
    """One observation term: where it sits in a frame of its input and how it is scaled."""

    name: str
    start: int
    size: int
    scale: tuple[float, ...]
    offset_from_default: bool = False


@dataclass(frozen=True, kw_only=True)
class ObsInput:
    """One ONNX input and the env observation group it is fed from.

    A vector input holds `history_length` frames of its terms (oldest first), each already scaled; an
    image input is one uint8 H x W x C frame from a named camera and has no terms.

    Attributes:
        name: ONNX input name.
        group: Env observation group ("policy", "image", ...).
        terms: Terms of one frame, in order (vector inputs).
        history_length: Frames stacked into the input (vector inputs).
        shape: Shape of one sample, without the batch axis: (width,) or (H, W, C).
        dtype: "float32" (vectors) or "uint8" (images).
        camera: Camera name of an image input.
    """

    name: str = "obs"
    group: str = "policy"
    terms: tuple[TermSpec, ...] = ()
    history_length: int = 1
    shape: tuple[int, ...]
    dtype: str = "float32"
    camera: str | None = None

    @property
    def is_image(self) -> bool:
        """True for a camera input."""
        return self.camera is not None

    @property
    def width(self) -> int:
        """Values per sample (the product of `shape`)."""
        return math.prod(self.shape)

    def validate(self) -> None:
        """Check the layout; raises MetadataError naming the input and the field."""
        where = f"observation input '{self.name}'"
        if self.is_image:
            if len(self.shape) != 3 or self.dtype != "uint8" or self.terms:
                raise MetadataError(f"{where} reads camera '{self.camera}', so it must be uint8 with an (H, W, C) shape "
                                    f"and no terms; got {self.dtype} {list(self.shape)} with {len(self.terms)} terms")
            return
        if self.dtype != "float32" or len(self.shape) != 1:
            raise MetadataError(f"{where} has no camera, so it must be a float32 vector; got {self.dtype} {list(self.shape)}")
        if self.history_length < 1:
            raise MetadataError(f"{where}: history_length must be at least 1, got {self.history_length}")
        pos = 0
        for t in self.terms:
            if t.start != pos:
                raise MetadataError(f"observation term '{t.name}' starts at {t.start}, expected {pos}")
            pos += t.size
        if pos * self.history_length != self.shape[0]:
            raise MetadataError(f"{where}: obs_dim {self.shape[0]} != sum of term sizes {pos} x history_length "
                                f"{self.history_length}")


# ---- action kinds -------------------------------------------------------------------------------


class ActionSpec(Kinded):
    """Base of the action kinds; `ACTION_KINDS` maps each `kind` to its class."""

    family: ClassVar[str] = "action"
    registry: ClassVar[dict[str, type]] = {}
    names: tuple[str, ...]

    def validate(self) -> None:
        """Check the kind's fields; raises MetadataError naming the field."""

    def _lengths(self, *fields_: str) -> None:
        n = len(self.names)
        for name in fields_:
            if len(getattr(self, name)) != n:
                raise MetadataError(f"action '{name}' has {len(getattr(self, name))} values for {n} actions")


ACTION_KINDS = ActionSpec.registry
register_action_kind = register_kind


@register_action_kind
@dataclass(frozen=True, kw_only=True)
class JointPositionAction(ActionSpec):
    """Joint position targets: target = offset + scale * action, tracked by PD gains kp, kv."""

    kind: ClassVar[str] = "joint_position"
    names: tuple[str, ...]
    scale: tuple[float, ...]
    offset: tuple[float, ...]
    default_pos: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    kp: tuple[float, ...]
    kv: tuple[float, ...]

    def validate(self) -> None:
        self._lengths("scale", "offset", "default_pos", "lower", "upper", "kp", "kv")
        for j, lo, hi in zip(self.names, self.lower, self.upper, strict=True):
            if not lo <= hi:
                raise MetadataError(f"action joint '{j}' has lower limit {lo} above its upper limit {hi}")


@register_action_kind
@dataclass(frozen=True, kw_only=True)
class EeDeltaAction(ActionSpec):
    """End-effector (TCP) translation deltas plus a gripper command.

    Attributes:
        names: Action names, e.g. ("ee_dx", "ee_dy", "ee_dz", "gripper").
        max_step: m; TCP target translation per control step at |action| = 1, per axis.
        clip: Actions are clipped to [-clip, clip].
        gripper_index: Position of the gripper command in the action vector (None: no gripper).
        gripper_width: m; finger-pad distance (closed, open); required with a gripper.
        gripper_closed: Action value that closes the gripper; its negative opens it.
    """

    kind: ClassVar[str] = "ee_delta"
    names: tuple[str, ...]
    max_step: float
    clip: float = 1.0
    gripper_index: int | None = None
    gripper_width: tuple[float, float] | None = None
    gripper_closed: float = 1.0

    def validate(self) -> None:
        if not self.max_step > 0 or not self.clip > 0:
            raise MetadataError(f"action max_step ({self.max_step} m) and clip ({self.clip}) must be positive")
        if self.gripper_index is not None and not 0 <= self.gripper_index < len(self.names):
            raise MetadataError(f"action gripper_index {self.gripper_index} is outside the {len(self.names)} actions")
        if (self.gripper_index is None) != (self.gripper_width is None):
            raise MetadataError("action gripper_index and gripper_width go together: give both for a gripper, "
                                "neither without one")


@register_action_kind
@dataclass(frozen=True, kw_only=True)
class SegmentTimeRatioAction(ActionSpec):
    """A waypoint planner's timing: segment i lasts heuristic_i * max_ratio ** clip(action_i, -1, 1)."""

    kind: ClassVar[str] = "segment_time_ratio"
    names: tuple[str, ...]
    max_ratio: float
    max_waypoints: int

    def validate(self) -> None:
        # Whether the names fit max_waypoints is the planner's check (it names the graph widths too).
        if not self.max_ratio > 1.0:
            raise MetadataError(f"action max_ratio must be a number > 1, got {self.max_ratio}")
        if self.max_waypoints < 2:
            raise MetadataError(f"action max_waypoints must be an integer >= 2, got {self.max_waypoints}")


@register_action_kind
@dataclass(frozen=True, kw_only=True)
class BoxAction(ActionSpec):
    """A plain continuous action (e.g. a gymnasium Box): env_action = offset + scale * network_output."""

    kind: ClassVar[str] = "box"
    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    scale: tuple[float, ...]
    offset: tuple[float, ...]

    def validate(self) -> None:
        self._lengths("low", "high", "scale", "offset")
        for a, lo, hi in zip(self.names, self.low, self.high, strict=True):
            if not lo <= hi:
                raise MetadataError(f"action '{a}' has low {lo} above high {hi}")


# ---- command kinds ------------------------------------------------------------------------------


class CommandSpec(Kinded):
    """Base of the command kinds; `COMMAND_KINDS` maps each `kind` to its class."""

    family: ClassVar[str] = "command"
    registry: ClassVar[dict[str, type]] = {}

    def validate(self) -> None:
        """Check the kind's fields; raises MetadataError naming the field."""


COMMAND_KINDS = CommandSpec.registry
register_command_kind = register_kind


@register_command_kind
@dataclass(frozen=True, kw_only=True)
class VelocityCommand(CommandSpec):
    """A base velocity command (vx, vy in m/s, wz in rad/s); ranges as trained (None: not recorded)."""

    kind: ClassVar[str] = "velocity"
    vx: tuple[float, float] | None = None
    vy: tuple[float, float] | None = None
    wz: tuple[float, float] | None = None

    def validate(self) -> None:
        for name in ("vx", "vy", "wz"):
            r = getattr(self, name)
            if r is not None and not r[0] <= r[1]:
                raise MetadataError(f"command range '{name}' is {list(r)}: its low end is above its high end")


@register_command_kind
@dataclass(frozen=True, kw_only=True)
class WaypointsCommand(CommandSpec):
    """A waypoint list (e.g. nav_msgs/Path) to plan through."""

    kind: ClassVar[str] = "waypoints"


@register_command_kind
@dataclass(frozen=True, kw_only=True)
class NoCommand(CommandSpec):
    """The policy takes no operator command (e.g. a manipulation skill)."""

    kind: ClassVar[str] = "none"


# ---- optional sections --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ChunkingSection:
    """An action-chunking graph (`s2r.real.chunking`): its chunk size and its extra inputs and output."""

    size: int
    ensemble_m: float
    state_input: str = "past_chunks"
    mask_input: str = "past_mask"
    state_output: str = "chunk"


@dataclass(frozen=True, kw_only=True)
class ResidualSection:
    """A residual policy on a frozen base (or the base fine-tuned alone when `finetune`)."""

    scale: float
    base: str
    finetune: bool = False
    q_filter: float | None = None  # the k of the pessimistic Q-filter inside the graph; None: no filter in it
    dim_scale: tuple[float, ...] | None = None  # per action dimension, when they differ (then `scale` is unused)


@dataclass(frozen=True, kw_only=True)
class PlannerSection:
    """What the waypoint planner runtime (`s2r.real.planner`) needs besides the action kind.

    Attributes:
        feasibility_dt: s, sampling period of the flatness check used in training.
        limits: `s2r.real.trajectory.QuadLimits` fields of the check (null: that limit is off).
        heuristic: Keyword arguments of `heuristic_durations` used in training.
    """

    feasibility_dt: float = 0.01
    limits: dict[str, float | None]
    heuristic: dict[str, float] = field(default_factory=dict)


# ---- the contract -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PolicyMetadata:
    """Everything the robot side needs to run an exported policy (schema version 2; see the module docstring)."""

    schema_version: int = SCHEMA_VERSION
    task_id: str
    robot: str
    algo: str
    control_dt: float
    observation: tuple[ObsInput, ...]
    action: ActionSpec
    command: CommandSpec
    onnx_output: str = "actions"
    normalizer_in_graph: bool = True
    chunking: ChunkingSection | None = None
    residual: ResidualSection | None = None
    planner: PlannerSection | None = None
    info: dict[str, Any] = field(default_factory=dict)

    # The first input is the policy's main observation; these keep its readers short.
    @property
    def obs(self) -> ObsInput:
        """The main (first) observation input."""
        return self.observation[0]

    @property
    def obs_dim(self) -> int:
        """Width of the main observation input."""
        return self.obs.width

    @property
    def onnx_input(self) -> str:
        """ONNX name of the main observation input."""
        return self.obs.name

    @property
    def action_names(self) -> tuple[str, ...]:
        """One name per action dimension."""
        return self.action.names

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, each typed kind with its "kind" field."""
        return dump(self)

    def to_json(self) -> str:
        """Serialise with stable key order."""
        return json.dumps(self.to_dict(), indent=2)

    def validate(self) -> None:
        """Check internal consistency; raises MetadataError naming the field."""
        if self.schema_version != SCHEMA_VERSION:
            raise MetadataError(f"schema_version is {self.schema_version}; metadata is built in version {SCHEMA_VERSION}")
        if not self.algo:
            raise MetadataError("'algo' must name the algorithm that trained the policy (e.g. 'ppo')")
        if not self.control_dt > 0:
            raise MetadataError(f"control_dt must be positive, got {self.control_dt}")
        if not self.observation:
            raise MetadataError("'observation' lists no ONNX input")
        names = [o.name for o in self.observation]
        if len(set(names)) != len(names):
            raise MetadataError(f"observation inputs repeat a name: {names}")
        for o in self.observation:
            o.validate()
        self.action.validate()
        self.command.validate()
        if self.chunking is not None and self.chunking.size < 1:
            raise MetadataError(f"chunking size must be at least 1, got {self.chunking.size}")
        if self.planner is not None and self.action.kind != SegmentTimeRatioAction.kind:
            raise MetadataError(f"a 'planner' section goes with the '{SegmentTimeRatioAction.kind}' action kind only; "
                                f"this file's action kind is '{self.action.kind}'")


def load_metadata(path: str | Path) -> PolicyMetadata:
    """Read, check and (schema version 1) convert a policy.json.

    Raises:
        MetadataError: Missing file, bad JSON, unknown schema version, an unknown, missing or mistyped field,
            an unknown action or command kind, or inconsistent values; one sentence naming the file and field.
    """
    path = Path(path)
    raw = read_document(path, MetadataError, "policy metadata", "(export writes it next to policy.onnx)")
    if not isinstance(raw, dict):
        raise MetadataError(f"{path} must hold a JSON object, found {type(raw).__name__}")
    version = raw.get("schema_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise MetadataError(f"{path} has schema_version {version!r}; this runtime reads "
                            f"{' and '.join(map(str, READABLE_VERSIONS))}")
    try:
        if version == 1:
            from s2r.real.metadata_v1 import convert_v1

            return convert_v1(raw)
        meta = parse(PolicyMetadata, raw, "", MetadataError)
        meta.validate()
        return meta
    except MetadataError as exc:
        raise MetadataError(f"{path}: {exc}") from None
