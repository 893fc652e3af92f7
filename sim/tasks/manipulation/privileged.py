"""Privileged actions: powers a Panda task grants the policy in simulation only, each with a scale in [0, 1].

After Mao et al. 2025 ("Learning Long-Horizon Robot Manipulation Skills via Privileged Action"): a policy that
may push the object with a virtual hand, pass its fingers through the table, bend its joints further or lift
a lighter object finds its way to success on a long contact-rich task with a plain reward; a curriculum
(`s2r.policies.curriculum`) then lowers the scales until the policy succeeds without them. The design here is
ours (the paper publishes no code or schedule).

A task config declares them as a composable tuple, `privileged=(VirtualWrench(), TableCollisionOff(), ...)`;
an empty tuple is the deployable task. What scale 1 and 0 mean for each:

- `VirtualWrench`: six extra action dimensions (force xyz, torque xyz in [-1, 1]) applied to the object's
  centre of mass in the world frame through the backend's `xfrc_applied`, bounded by scale * max_force /
  max_torque, while the hand is within `reach_radius` of the object (gate "reach"), placed around it as
  for a grasp (gate "grasp_pose"), so placed with the fingers open across it (gate "straddle") or holding it
  (gate "grasped"). These are the only privileged
  *action dimensions*; exports drop them from the graph.
- `FixtureForce`: one extra action dimension in [-1, 1], a force along the task's moving fixture's joint (the
  drawer's slide; + opens it) of at most scale * max_force, while the hand is within `reach_radius` of the
  fixture's handle. Only a task with a fixture joint (Panda-Drawer-Cube) accepts it. Its column follows the
  wrench's six when both are declared, whatever the declaration order.
- `TableCollisionOff`: each episode, with probability `scale`, the hand and finger pads do not collide with
  the table (their contact bits are moved off the table's) and the TCP may go `floor_drop` below the table;
  with gate "grasp_pose" (or "straddle") only while the hand is placed around the object as for a grasp (and open
  across it).
  They still touch the object and the task's fixture geoms (`PandaEnv.FIXTURE_GEOMS`); everything else, a
  drawer's cabinet and tray walls included, they pass through.
- `WiderJointLimits`: joint limits (and the servo target box) widened by scale * extra rad per side.
- `ReducedGravity`: an upward force of scale * max_reduction * m * g on the object.
- `RelaxedHold`: the success test itself as a privilege (tasks with a `success_hold`, the flat-box lift): at
  scale s the held lift needs round(success_hold * (1 - s)) steps; 0 (scale 1) counts the lowest corner at the
  success height at one instant, no squeeze needed, so a curriculum has successes to advance on from the start.

The runtime side (`Privileges`) is built by the env; the curriculum sets the scales through
`PandaEnv.set_privilege_scale`. Only the CPU backend (per-world models) is supported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import mujoco
import numpy as np

WRENCH_NAMES = ("priv_fx", "priv_fy", "priv_fz", "priv_tx", "priv_ty", "priv_tz")
FIXTURE_NAMES = ("priv_fixture_f",)
# Contact bit a relaxed hand uses: the objects' conaffinity carries it, the table's does not.
RELAXED_BIT = 4
HAND_GEOM_PREFIXES = ("hand", "pad_left_", "pad_right_")


def _check_scale(kind: str, scale: float) -> None:
    if not 0.0 <= scale <= 1.0:
        raise ValueError(f"privileged action '{kind}' has scale {scale}; a scale lies in [0, 1]")


@dataclass(frozen=True, kw_only=True)
class VirtualWrench:
    """A bounded virtual force and torque on the object (six extra action dimensions).

    Attributes:
        kind: Registry name (written to config.json so the list reads back typed).
        scale: Starting scale in [0, 1].
        max_force: Force per axis at |action| = 1 and scale 1 (N).
        max_torque: Torque per axis at |action| = 1 and scale 1 (N m).
        reach_radius: With gate "reach": the wrench acts only while the TCP is within this distance of the
            object's centre (m), as if the hand pushed it: the policy must still bring the hand to the object, the
            behaviour that survives the curriculum. 0 applies it anywhere.
        gate: "reach" (the TCP within `reach_radius`) or "grasp_pose": only while the hand is placed around the
            object as for a grasp (the task's `in_grasp_pose`; the gripper's opening does not matter). With
            "reach" a hand hovering near the flat box lifted it with the wrench alone down to scale ~0.1 and never
            learned to grasp; gated on the grasp pose, the wrench assists a hand that is where a grasp would hold
            the object, so closing the fingers can take over the lift as the scale falls. "grasp_pose" still leaked:
            a *closed* hand pressed against the unturned flat box's long side is within its 3 cm, and a step or two
            of 6 N threw the light box (round 4). "straddle": the grasp pose with the fingers open at least as wide
            as the object spans across them (the task's `straddles`; a hand closed on it counts, within the
            grasp's tolerance), which for the flat box needs the turn first; "grasped": the task's `_grasped`.
    """

    kind: str = "virtual_wrench"
    scale: float = 1.0
    max_force: float = 6.0
    max_torque: float = 0.3
    reach_radius: float = 0.08
    gate: str = "reach"
    action_dims: ClassVar[int] = 6
    GATES: ClassVar[tuple[str, ...]] = ("reach", "grasp_pose", "straddle", "grasped")

    def __post_init__(self) -> None:
        if self.gate not in self.GATES:
            raise ValueError(f"virtual_wrench.gate is '{self.gate}'; use one of {', '.join(self.GATES)}")


@dataclass(frozen=True, kw_only=True)
class FixtureForce:
    """A bounded virtual force along the joint of the task's moving fixture, e.g. a drawer (one extra dimension).

    Attributes:
        kind: Registry name.
        scale: Starting scale in [0, 1].
        max_force: Force along the joint at |action| = 1 and scale 1 (N); + moves the joint's coordinate up
            (opens a drawer).
        reach_radius: The force acts only while the TCP is within this distance of the fixture's handle (m), as if
            the hand pulled it; 0 applies it anywhere.
    """

    kind: str = "fixture_force"
    scale: float = 1.0
    max_force: float = 8.0
    reach_radius: float = 0.08
    action_dims: ClassVar[int] = 1


@dataclass(frozen=True, kw_only=True)
class TableCollisionOff:
    """Hand and finger pads pass through the table in a `scale` fraction of the episodes.

    Attributes:
        kind: Registry name.
        scale: Starting scale in [0, 1] (the probability that an episode has the relaxation).
        floor_drop: How far below the table the TCP target may go in a relaxed episode (m).
        gate: "episode": the whole of a relaxed episode; "grasp_pose": in a relaxed episode, only while the hand
            is placed around the object as for a grasp (the task's `in_grasp_pose`), and until its TCP is
            `CLEAR_Z` above the table again. Ungated, a flat-box policy whose wrench was gated on the grasp pose
            lifted the unturned box by passing its hand through the table and scooping it from below (97 %
            success at scale 1 with the wrench off, 0 % with the table back): a lift no real table allows.
            "straddle": as "grasp_pose", with the hand open across the object as for the wrench's gate of that name.
    """

    kind: str = "table_collision_off"
    scale: float = 1.0
    floor_drop: float = 0.03
    gate: str = "episode"
    action_dims: ClassVar[int] = 0
    GATES: ClassVar[tuple[str, ...]] = ("episode", "grasp_pose", "straddle")
    #: With a gate other than "episode", a relaxed hand stays relaxed after leaving the pose while its TCP is below this
    #: height (m): switching contact back on with the pads inside the table would pop them (and the box) up.
    CLEAR_Z: ClassVar[float] = 0.01

    def __post_init__(self) -> None:
        if self.gate not in self.GATES:
            raise ValueError(f"table_collision_off.gate is '{self.gate}'; use one of {', '.join(self.GATES)}")


@dataclass(frozen=True, kw_only=True)
class WiderJointLimits:
    """Joint limits (and the servo target box) widened by scale * extra rad on each side.

    Attributes:
        kind: Registry name.
        scale: Starting scale in [0, 1].
        extra: Widening per side at scale 1 (rad).
    """

    kind: str = "wider_joint_limits"
    scale: float = 1.0
    extra: float = 0.3
    action_dims: ClassVar[int] = 0


@dataclass(frozen=True, kw_only=True)
class ReducedGravity:
    """An upward force cancelling scale * max_reduction of the object's weight.

    Attributes:
        kind: Registry name.
        scale: Starting scale in [0, 1].
        max_reduction: Fraction of the weight cancelled at scale 1.
    """

    kind: str = "reduced_gravity"
    scale: float = 1.0
    max_reduction: float = 0.8
    action_dims: ClassVar[int] = 0


@dataclass(frozen=True, kw_only=True)
class RelaxedHold:
    """The success test as a privilege: a shorter hold, down to an instant lift, at higher scale.

    At scale s a task with `success_hold` h succeeds after `relaxed_hold_steps(h, s)` = round(h * (1 - s))
    steps of its held lift (Python's round: 0, 2, 4, 4, 5 at s = 1, 0.5, 0.25, 0.12, 0.06 for h = 5); 0 is the
    instant height test, with no squeeze needed. Why: trained against the held lift from scratch, neither the
    curriculum nor plain PPO saw one success in a million steps (round 7), so the curriculum never advanced;
    the instant test is the one rounds 1-6 reached 30-60 % training success on.

    Attributes:
        kind: Registry name.
        scale: Starting scale in [0, 1].
    """

    kind: str = "relaxed_hold"
    scale: float = 1.0
    action_dims: ClassVar[int] = 0


def relaxed_hold_steps(success_hold: int, scale: float) -> int:
    """Control steps of held lift needed at privilege scale `scale` (see `RelaxedHold`)."""
    _check_scale("relaxed_hold", scale)
    return round(success_hold * (1.0 - scale))


PrivilegedAction = VirtualWrench | FixtureForce | TableCollisionOff | WiderJointLimits | ReducedGravity | RelaxedHold
# `kind` is a plain dataclass default, so the class attribute holds it.
KINDS: dict[str, type] = {c.kind: c for c in (VirtualWrench, FixtureForce, TableCollisionOff, WiderJointLimits,
                                              ReducedGravity, RelaxedHold)}


def parse_privileged(items: Any, where: str = "privileged") -> tuple[PrivilegedAction, ...]:
    """Typed privileged actions from dataclasses or from their config.json dicts; checks kinds, scales, duplicates.

    Raises:
        ValueError: An unknown kind, a scale outside [0, 1], a duplicate kind or an unknown key (one sentence).
    """
    out = []
    for item in items:
        if isinstance(item, dict):
            kind = item.get("kind")
            if kind not in KINDS:
                raise ValueError(f"{where} entry {item!r} has kind {kind!r}; known kinds: {', '.join(KINDS)}")
            names = {f.name for f in dataclasses.fields(KINDS[kind])}
            unknown = set(item) - names
            if unknown:
                raise ValueError(f"{where} entry of kind '{kind}' has unknown keys {sorted(unknown)}; it takes {sorted(names)}")
            item = KINDS[kind](**item)
        if not isinstance(item, tuple(KINDS.values())):
            raise ValueError(f"{where} entry {item!r} is not a privileged action; use one of {', '.join(KINDS)}")
        _check_scale(item.kind, item.scale)
        out.append(item)
    kinds = [p.kind for p in out]
    dup = sorted({k for k in kinds if kinds.count(k) > 1})
    if dup:
        raise ValueError(f"{where} declares {', '.join(dup)} more than once; keep one entry per kind")
    return tuple(out)


def privileged_action_names(items: tuple[PrivilegedAction, ...]) -> tuple[str, ...]:
    """The extra action names the declared privileges add (after the task's own): the wrench's, then the fixture's."""
    wrench = WRENCH_NAMES if any(isinstance(p, VirtualWrench) for p in items) else ()
    return wrench + (FIXTURE_NAMES if any(isinstance(p, FixtureForce) for p in items) else ())


class Privileges:
    """The runtime of the declared privileged actions for a batch of worlds.

    Args:
        items: Declared privileged actions (already parsed).
        models: The backend's per-world models (edited in place: contact bits, joint ranges).
        object_body: Body id of the task's object.
        object_geoms: Geom ids of things the relaxed hand must still touch (the object, fixtures).
        q_lo: (7,) nominal lower servo target limits; `q_hi` the upper ones.
        ws_lo: (3,) nominal lowest TCP target.
        fixture_body: Body id of the task's moving fixture (a drawer), -1 for none.
        fixture_axis: (3,) world direction of the fixture's joint (a slide), for `FixtureForce`.
        task_name: The task's config class, for error messages.

    Raises:
        ValueError: `FixtureForce` declared on a task without a moving fixture.
    """

    def __init__(self, items: tuple[PrivilegedAction, ...], models: list[mujoco.MjModel], object_body: int,
                 object_geoms: tuple[int, ...], q_lo: np.ndarray, q_hi: np.ndarray, ws_lo: np.ndarray,
                 fixture_body: int = -1, fixture_axis: np.ndarray | None = None, task_name: str = "this task") -> None:
        self.items = {p.kind: p for p in items}
        if "fixture_force" in self.items and (fixture_body < 0 or fixture_axis is None):
            raise ValueError(f"{task_name}.privileged declares 'fixture_force', but the task has no moving fixture to push "
                             "(only Panda-Drawer-Cube has one, its drawer): remove that entry")
        self.fixture_body = fixture_body
        self.fixture_axis = None if fixture_axis is None else np.asarray(fixture_axis, dtype=np.float64)
        self.scales = {p.kind: float(p.scale) for p in items}
        self.models = models
        self.n = n = len(models)
        self.body = object_body
        self.extra_dims = sum(p.action_dims for p in items)
        m0 = models[0]
        self.hand_geoms = np.array([g for g in range(m0.ngeom)
                                    if (mujoco.mj_id2name(m0, mujoco.mjtObj.mjOBJ_GEOM, g) or "").startswith(HAND_GEOM_PREFIXES)])
        self._hand_bits = (m0.geom_contype[self.hand_geoms].copy(), m0.geom_conaffinity[self.hand_geoms].copy())
        if "table_collision_off" in self.items:
            for m in models:
                # The object and fixtures also accept the relaxed bit, so relaxed fingers still grasp and push.
                m.geom_conaffinity[list(object_geoms)] |= RELAXED_BIT
        self._q_nominal = (q_lo.copy(), q_hi.copy(), m0.jnt_range[: len(q_lo)].copy())
        self.q_lo, self.q_hi = np.tile(q_lo, (n, 1)), np.tile(q_hi, (n, 1))
        self._ws_lo = ws_lo.copy()
        self.ws_lo = np.tile(ws_lo, (n, 1))
        self.relaxed = np.zeros(n, dtype=bool)  # the hand passes the table now
        self.drawn = np.zeros(n, dtype=bool)  # this episode has the relaxation (all of it with gate "episode")
        self.xfrc = np.zeros((n, m0.nbody, 6))
        self._apply_joint_limits()

    @property
    def active(self) -> bool:
        """True while any declared privilege has a scale above zero."""
        return any(s > 0 for s in self.scales.values())

    def set_scale(self, scale: float | dict[str, float]) -> None:
        """Set one scale for every declared privilege, or {kind: scale} for some of them."""
        new = dict.fromkeys(self.scales, scale) if not isinstance(scale, dict) else scale
        for kind, s in new.items():
            if kind not in self.scales:
                raise ValueError(f"privilege '{kind}' is not declared by this task (it declares {sorted(self.scales)})")
            _check_scale(kind, float(s))
            self.scales[kind] = float(s)
        self._apply_joint_limits()

    def _apply_joint_limits(self) -> None:
        lo, hi, rng = self._q_nominal
        p = self.items.get("wider_joint_limits")
        widen = p.extra * self.scales[p.kind] if p is not None else 0.0
        self.q_lo[:] = lo - widen
        self.q_hi[:] = hi + widen
        if p is not None:
            r = np.stack([rng[:, 0] - widen, rng[:, 1] + widen], axis=1)
            for m in self.models:
                m.jnt_range[: len(lo)] = r

    def reset(self, ids: np.ndarray, rng: np.random.Generator) -> None:
        """Draw which of worlds `ids` run this episode with the table relaxation, and set their contact bits."""
        p = self.items.get("table_collision_off")
        if p is None or len(ids) == 0:
            return
        self.drawn[ids] = rng.uniform(size=len(ids)) < self.scales[p.kind]
        self._relax(ids, self.drawn[ids] & (p.gate == "episode"))

    def _relax(self, ids: np.ndarray, on: np.ndarray) -> None:
        """Set worlds `ids`' hand contact bits and TCP floor: relaxed where `on`, nominal elsewhere."""
        p = self.items["table_collision_off"]
        self.relaxed[ids] = on
        contype, conaff = self._hand_bits
        for i, relaxed in zip(ids, on, strict=True):
            m = self.models[i]
            m.geom_contype[self.hand_geoms] = RELAXED_BIT if relaxed else contype
            m.geom_conaffinity[self.hand_geoms] = RELAXED_BIT if relaxed else conaff
            self.ws_lo[i] = self._ws_lo
            if relaxed:
                self.ws_lo[i, 2] -= p.floor_drop

    @property
    def table_gate(self) -> str:
        """The declared table relaxation's gate (one of `TableCollisionOff.GATES`); "" without one."""
        p = self.items.get("table_collision_off")
        return p.gate if p is not None else ""

    def gate_table(self, gate_on: np.ndarray, tcp_z: np.ndarray) -> None:
        """With gate "grasp_pose" or "straddle": relax the table for this control step in the worlds whose episode
        drew the relaxation and whose hand holds the gate (or is still below `CLEAR_Z` since it did); a no-op
        with gate "episode".

        Args:
            gate_on: (n,) bool, the table gate's condition now (the task's `gate_mask(gate)`).
            tcp_z: (n,) TCP heights above the table (m).
        """
        p = self.items.get("table_collision_off")
        if p is None or p.gate == "episode":
            return
        want = self.drawn & (np.asarray(gate_on, dtype=bool) | (self.relaxed & (tcp_z < p.CLEAR_Z)))
        ids = np.flatnonzero(want != self.relaxed)
        if len(ids):
            self._relax(ids, want[ids])

    @property
    def wrench_gate(self) -> str:
        """The declared virtual wrench's gate (one of `VirtualWrench.GATES`); "" without a wrench."""
        w = self.items.get("virtual_wrench")
        return w.gate if w is not None else ""

    def wrench(self, extra: np.ndarray, hand_distance: np.ndarray | None = None,
               fixture_distance: np.ndarray | None = None, gate_on: np.ndarray | None = None) -> np.ndarray | None:
        """(n, nbody, 6) applied forces for one control step from the extra action columns; None when none apply.

        Args:
            extra: (n, extra_dims) privileged action columns in [-clip, clip] (the wrench's six, then the fixture
                force's one, for those declared).
            hand_distance: (n,) TCP-to-object distance (m), for the wrench's `reach_radius`; None: no gating.
            fixture_distance: (n,) TCP-to-handle distance (m), for the fixture force's `reach_radius`; None: no gating.
            gate_on: (n,) bool, the condition of the wrench's gate when it is not "reach" (the task's
                `gate_mask(gate)`: placed for a grasp, straddling or holding the object; required then).
        """
        self.xfrc[:] = 0.0
        used = False
        w = self.items.get("virtual_wrench")
        f = self.items.get("fixture_force")
        if f is not None and self.scales[f.kind] > 0:
            col = 6 if w is not None else 0
            a = np.clip(extra[:, col], -1.0, 1.0)
            if f.reach_radius > 0 and fixture_distance is not None:
                a = a * (fixture_distance < f.reach_radius)
            # A force at the fixture's centre of mass along its slide is exactly a force on the joint.
            self.xfrc[:, self.fixture_body, :3] += (a * (self.scales[f.kind] * f.max_force))[:, None] * self.fixture_axis
            used = True
        if w is not None and self.scales[w.kind] > 0:
            s = self.scales[w.kind]
            a = np.clip(extra[:, :6], -1.0, 1.0)
            if w.gate != "reach":
                if gate_on is None:
                    raise ValueError(f"virtual_wrench.gate '{w.gate}' needs the task's gate condition; none was given")
                a = a * np.asarray(gate_on, dtype=bool)[:, None]
            elif w.reach_radius > 0 and hand_distance is not None:
                a = a * (hand_distance < w.reach_radius)[:, None]
            self.xfrc[:, self.body, :3] += a[:, :3] * (s * w.max_force)
            self.xfrc[:, self.body, 3:] += a[:, 3:] * (s * w.max_torque)
            used = True
        g = self.items.get("reduced_gravity")
        if g is not None and self.scales[g.kind] > 0:
            mass = np.array([m.body_mass[self.body] for m in self.models])
            weight = mass * -self.models[0].opt.gravity[2]
            self.xfrc[:, self.body, 2] += self.scales[g.kind] * g.max_reduction * weight
            used = True
        return self.xfrc if used else None
