"""A flat-ground walker that also tracks a commanded body height: a warm start that can crouch.

The shipped flat walker (tests/data/go1_walk) only ever stood at its nominal height, and none of the three
confined-space policies of issue 18 found a crouch from it within their budget unless paid for tracking a
height (the skills baseline, partly). This task adds one input to the walker's, `crouch_command` (how far
below the standing height the base should be held: the name, scale and meaning the "skills" baseline reads),
and a reward for tracking that height, so a few minutes of PPO from the flat walker give a walker with a posture input. All three
confined policies then start from it: "skills" reads the column directly, the waypoint follower has it fed
from its waypoints in the first layer (`s2r.policies.warm_start`), goal-only drops it (its mean).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from s2r.sim.env import ObsTerm
from s2r.sim.tasks import terms as T
from s2r.sim.tasks.locomotion import POLICY_TERMS, PRIVILEGED_TERMS, LocomotionConfig, LocomotionEnv, RewardConfig
from s2r.sim.tasks.terms import RewardTerm, reward_field

HEIGHT_TERM = ObsTerm(name="crouch_command", size=1, scale=(10.0,))


@dataclass(frozen=True, kw_only=True)
class CrouchRewardConfig(RewardConfig):
    """The walker's reward terms plus body-height tracking (the skills baseline's term, wider and heavier: a
    gradient from a standing start to a 0.17 m crouch)."""

    track_body_height: RewardTerm = reward_field("track_body_height", 1.5, sigma=0.07)


@dataclass(frozen=True, kw_only=True)
class CrouchWalkConfig(LocomotionConfig):
    """`LocomotionConfig` plus the body-height command's range.

    Attributes:
        body_height: Range (m above the ground) a command is drawn from, uniformly.
        stand_height: The standing height a `stand_fraction` share of commands asks for (`crouch_command` 0);
            the confined planner's `stand_body_z`.
        stand_fraction: Share of commands at `stand_height` (the walker keeps its standing gait).
    """

    body_height: tuple[float, float] = (0.17, 0.30)
    stand_height: float = 0.28
    stand_fraction: float = 0.25
    rewards: CrouchRewardConfig = field(default_factory=CrouchRewardConfig)

    def __post_init__(self) -> None:
        lo, hi = self.body_height
        if not self.min_base_height < lo <= hi:
            raise ValueError(f"body_height {self.body_height} must be ordered and above min_base_height "
                             f"{self.min_base_height} (a command below it asks for a fall)")
        if not 0.0 <= self.stand_fraction <= 1.0:
            raise ValueError(f"stand_fraction must be in [0, 1], got {self.stand_fraction}")


@dataclass
class CrouchState(T.LocoState):
    """`LocoState` plus the commanded body height (n,) in m above the ground, and its depth below standing."""

    height_command: T.Array = None
    crouch: T.Array = None


class CrouchWalkEnv(LocomotionEnv):
    """Go1 tracks a velocity and a body-height command on flat ground (see the module docstring)."""

    def __init__(self, cfg: CrouchWalkConfig, num_envs: int = 1, seed: int = 0) -> None:
        self.height_command = np.full(num_envs, cfg.stand_height)
        super().__init__(cfg, num_envs, seed)
        self._policy_terms = (*POLICY_TERMS, HEIGHT_TERM)
        self._declare(self._policy_terms, PRIVILEGED_TERMS, self.joint_names, self.spec.extras)

    def _sample_commands(self, ids: np.ndarray) -> None:
        super()._sample_commands(ids)
        cfg, k = self.cfg, len(ids)
        h = self.rng.uniform(*cfg.body_height, k)
        self.height_command[ids] = np.where(self.rng.random(k) < cfg.stand_fraction, cfg.stand_height, h)

    def _loco_state(self, sensors: np.ndarray, touch: np.ndarray, first: np.ndarray | None = None,
                    air_at_td: np.ndarray | None = None, ids: np.ndarray | None = None) -> T.LocoState:
        s = super()._loco_state(sensors, touch, first, air_at_td, ids)
        rows = slice(None) if ids is None else ids
        fields = {f: getattr(s, f) for f in s.__dataclass_fields__}
        h = self.height_command[rows]
        return CrouchState(**fields, height_command=h, crouch=self.cfg.stand_height - h)
