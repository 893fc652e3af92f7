"""Waypoint following through a confined 3D space: the RL half of a planner + follower hierarchy.

The quadruped spawns at one end of a procedural tunnel (`s2r.sim.terrain.confined`) and must reach the
other. The robot-side planner (`s2r.real.confined_planner`, the same code the robot runs) plans waypoints
over the map's voxels once per map (Dijkstra from the goal) and per env from its spawn; an env that strays
more than the planner's `stray_distance` from its path gets a re-plan from where it is. The policy sees the
next `waypoints_observed` waypoints in its body frame (their z is the body height the planner wants there:
lower where only a crouch fits), proprioception and a ray-cast floor/ceiling height map around the body; it
is rewarded for progress towards the current waypoint, a bonus when one is reached (the next becomes the
target), smooth actions, and headroom under the ceiling. No velocity or body-height command: how to crouch
and squeeze is the policy's to find.

All envs of one instance share one map (one MJCF scene); the map seed is a training seed derived from the env
seed unless `map_seed` names one (e.g. a held-out `EVAL_SEEDS` map).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np
from s2r.real.confined_planner import ConfinedPlanner, ConfinedPlannerConfig, floor_and_ceiling
from s2r.sim.env import Obs, ObsTerm
from s2r.sim.tasks import terms as T
from s2r.sim.tasks.locomotion import LocomotionConfig, LocomotionEnv, _quat_rotate_inv
from s2r.sim.tasks.terms import RewardTerm, reward_field
from s2r.sim.terrain.confined import ConfinedConfig, ConfinedMap, generate, load_confined_model, train_seed
from s2r.sim.terrain.heightmap import HeightMapConfig, RayHeightMap

TRUNK_HALF_HEIGHT = 0.057  # go1.xml trunk box half-size along z: headroom is measured from its top


@dataclass(frozen=True, kw_only=True)
class WaypointRewardConfig:
    """Reward terms of the waypoint follower (weight 0 disables one); scaled by weight * control_dt."""

    waypoint_progress: RewardTerm = reward_field("waypoint_progress", 2.0, max_speed=1.0)
    waypoint_reached: RewardTerm = reward_field("waypoint_reached", 1.0)
    headroom: RewardTerm = reward_field("headroom", -2.0, margin=0.04)
    lin_vel_z: RewardTerm = reward_field("lin_vel_z", -2.0)
    ang_vel_xy: RewardTerm = reward_field("ang_vel_xy", -0.05)
    orientation: RewardTerm = reward_field("orientation", -0.5)
    torques: RewardTerm = reward_field("torques", -2e-4)
    joint_acc: RewardTerm = reward_field("joint_acc", -2.5e-7)
    action_rate: RewardTerm = reward_field("action_rate", -0.01)
    joint_limits: RewardTerm = reward_field("joint_limits", -10.0)
    feet_air_time: RewardTerm = reward_field("feet_air_time", 0.5, target=0.3)
    termination: float = -2.0


@dataclass(frozen=True, kw_only=True)
class ConfinedWaypointConfig(LocomotionConfig):
    """The confined waypoint task: a `LocomotionConfig` plus the map, planner, height map and waypoint settings.

    Attributes:
        map: Map size and difficulty ranges.
        difficulty: Curriculum level in [0, 1].
        map_seed: Map seed; -1 derives a training seed from the env seed.
        planner: Body size and costs of the planner (the robot side uses the same config).
        height_map: Ray-cast grid around the body.
        waypoints_observed: Waypoints in the observation (the current one first; the last repeats at the end).
        reach_radius: Horizontal distance at which the current waypoint counts as reached.
        approach_speed: Speed (m/s) of the implicit command towards the waypoint that gates the air-time reward.
    """

    map: ConfinedConfig = field(default_factory=ConfinedConfig)
    difficulty: float = 0.5
    map_seed: int = -1
    planner: ConfinedPlannerConfig = field(default_factory=ConfinedPlannerConfig)
    height_map: HeightMapConfig = field(default_factory=HeightMapConfig)
    waypoints_observed: int = 3
    reach_radius: float = 0.25
    approach_speed: float = 0.5
    episode_s: float = 30.0
    spawn_height: float = 0.3
    rewards: WaypointRewardConfig = field(default_factory=WaypointRewardConfig)


@dataclass
class WaypointState(T.LocoState):
    """`LocoState` plus what the waypoint terms read (shapes (num_envs, ...))."""

    waypoints: T.Array = None  # (n, 3 * waypoints_observed) body frame
    height_map: T.Array = None  # (n, 2 * points) drop then headroom (m)
    progress: T.Array = None  # (n,) m/s towards the current waypoint this step
    reached: T.Array = None  # (n,) bool: a waypoint was reached this step
    headroom: T.Array = None  # (n,) ceiling above the trunk's top (m)


def obs_waypoints(s: WaypointState) -> T.Array:
    """The next waypoints relative to the base, in the body frame (m)."""
    return s.waypoints


def obs_height_map(s: WaypointState) -> T.Array:
    """Floor drop and ceiling headroom around the body from ray casts (m)."""
    return s.height_map


def rew_waypoint_progress(s: WaypointState, max_speed: float = 1.0) -> T.Array:
    """Speed towards the current waypoint (m/s), capped so a fall forward does not pay."""
    return s.xp.clip(s.progress, -max_speed, max_speed)


def rew_waypoint_reached(s: WaypointState) -> T.Array:
    """1 / dt on the step a waypoint is reached (a bonus of `weight` per waypoint after the dt scaling)."""
    return s.reached / s.dt


def rew_headroom(s: WaypointState, margin: float = 0.04) -> T.Array:
    """How far the trunk's top comes within `margin` of the ceiling above it, as a share of the margin."""
    return s.xp.clip(margin - s.headroom, 0.0, None) / margin


for _name, _fn in (("waypoint_progress", rew_waypoint_progress), ("waypoint_reached", rew_waypoint_reached),
                   ("headroom", rew_headroom)):
    if _name in T.REWARD_TERMS:
        raise RuntimeError(f"reward term '{_name}' is registered twice")
    T.REWARD_TERMS[_name] = _fn
T.OBS_TERMS.setdefault("waypoints", obs_waypoints)
T.OBS_TERMS.setdefault("height_map", obs_height_map)


def policy_terms(cfg: ConfinedWaypointConfig) -> tuple[ObsTerm, ...]:
    """The `policy` group: waypoints, proprioception and the height map (no velocity command)."""
    return (
        ObsTerm(name="base_ang_vel", size=3, scale=(0.25,), noise=0.05),
        ObsTerm(name="projected_gravity", size=3, noise=0.05),
        ObsTerm(name="waypoints", size=3 * cfg.waypoints_observed, scale=(0.5,)),
        ObsTerm(name="joint_pos", size=12, offset_from_default=True, noise=0.01),
        ObsTerm(name="joint_vel", size=12, scale=(0.05,), noise=0.075),
        ObsTerm(name="last_action", size=12),
        # Noise comes from the height map itself (HeightMapConfig.noise), in metres before scaling.
        ObsTerm(name="height_map", size=2 * cfg.height_map.points, scale=(2.0,)),
    )


PRIVILEGED_TERMS = (
    ObsTerm(name="base_lin_vel", size=3, scale=(2.0,)),
    ObsTerm(name="base_height", size=1),
    ObsTerm(name="foot_contact", size=4),
    ObsTerm(name="randomization", size=4),
)


class ConfinedWaypointEnv(LocomotionEnv):
    """Go1 follows planner waypoints through a confined map (see the module docstring)."""

    cmap: ConfinedMap

    def _load_model(self, cfg: ConfinedWaypointConfig, seed: int) -> mujoco.MjModel:
        seed_map = cfg.map_seed if cfg.map_seed >= 0 else train_seed(seed)
        self.cmap = generate(seed_map, cfg.difficulty, cfg.map)
        return load_confined_model(self.cmap, cfg.model)

    def __init__(self, cfg: ConfinedWaypointConfig, num_envs: int = 1, seed: int = 0) -> None:
        super().__init__(cfg, num_envs, seed)
        occ = self.cmap.voxels()
        k0, k1 = floor_and_ceiling(occ)
        res = self.cmap.resolution
        self._floor_z = k0 * res + self.cmap.origin[2]  # raw columns (no footprint) for heights under the body
        self._ceil_z = np.minimum(k1, occ.shape[2] + 20) * res + self.cmap.origin[2]
        self.planner = ConfinedPlanner(occ, res, self.cmap.origin, cfg.planner)
        self.planner.set_goal(self.cmap.goal)
        self.heights = RayHeightMap(self.model, cfg.height_map)
        # Waypoints per env, padded with the last one; room for paths three times the tunnel's length.
        self._wp_cap = int(np.ceil(3 * cfg.map.length / cfg.planner.waypoint_spacing)) + 1
        n = num_envs
        self.waypoints = np.zeros((n, self._wp_cap, 3))
        self.wp_count = np.ones(n, dtype=np.int64)
        self.wp_index = np.zeros(n, dtype=np.int64)
        self.polylines: list[np.ndarray] = [np.zeros((1, 2))] * n
        self.replans = 0
        self._progress = np.zeros(n)
        self._reached = np.zeros(n, dtype=bool)
        self._prev_dist = np.zeros(n)
        self._declare(policy_terms(cfg), PRIVILEGED_TERMS, self.joint_names, {**self.spec.extras,
                      "map_seed": self.cmap.seed, "difficulty": cfg.difficulty})
        self._policy_terms = policy_terms(cfg)

    # ---- hooks ------------------------------------------------------------------------------------

    def _sample_commands(self, ids: np.ndarray) -> None:
        """No operator command: `command` is the implicit approach velocity set each step."""
        self.command[ids] = 0.0

    def _column(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ij = np.floor((xy - self.cmap.origin[:2]) / self.cmap.resolution).astype(int)
        i = np.clip(ij[:, 0], 0, self._floor_z.shape[0] - 1)
        j = np.clip(ij[:, 1], 0, self._floor_z.shape[1] - 1)
        return i, j

    def _reset_state(self, ids: np.ndarray) -> None:
        super()._reset_state(ids)
        cfg, k = self.cfg, len(ids)
        qpos = self.backend.qpos
        xy = self.cmap.start[:2] + self.rng.uniform(-0.15, 0.15, (k, 2))
        yaw = self.rng.uniform(-0.3, 0.3, k)
        i, j = self._column(xy)
        # Footprint-wide floor: the planner's filtered floor, so no foot starts inside a step.
        ground = self.planner.floor[i, j] + self.cmap.origin[2]
        self.ground_z[ids] = ground
        qpos[ids, 0:2] = xy
        qpos[ids, 2] = ground + cfg.spawn_height
        qpos[ids, 3:7] = np.stack([np.cos(yaw / 2), 0 * yaw, 0 * yaw, np.sin(yaw / 2)], axis=1)
        self.backend.forward_sensors(ids)
        for e, p in zip(ids.tolist(), xy, strict=True):
            self._set_path(e, self.planner.plan(p))
        self._progress[ids] = 0.0
        self._reached[ids] = False
        self._prev_dist[ids] = self._target_dist(ids)

    def _set_path(self, e: int, path: object) -> None:
        wps = path.waypoints[: self._wp_cap]
        self.waypoints[e, : len(wps)] = wps
        self.waypoints[e, len(wps):] = wps[-1]
        self.wp_count[e] = len(wps)
        self.wp_index[e] = 0
        self.polylines[e] = path.polyline

    def _target_dist(self, ids: np.ndarray | slice = slice(None)) -> np.ndarray:
        rows = np.arange(self.num_envs)[ids]
        target = self.waypoints[rows, self.wp_index[rows], :2]
        return np.hypot(*(target - self.backend.qpos[rows, :2]).T)

    def _step_state(self) -> T.LocoState:
        cfg = self.cfg
        qpos = self.backend.qpos
        # Re-plan for envs that strayed from their path (rare; one tree walk each).
        for e in range(self.num_envs):
            new = self.planner.replan(qpos[e, :2], _Path(self.polylines[e]))
            if new is not None:
                self._set_path(e, new)
                self._prev_dist[e] = self._target_dist(np.array([e]))[0]
                self.replans += 1
        dist = self._target_dist()
        self._progress[:] = (self._prev_dist - dist) / cfg.control_dt
        last = self.wp_index >= self.wp_count - 1
        self._reached[:] = (dist < cfg.reach_radius) & ~(last & (self._prev_dist < cfg.reach_radius))
        self.wp_index[:] = np.where(self._reached & ~last, self.wp_index + 1, self.wp_index)
        self._prev_dist[:] = self._target_dist()
        i, j = self._column(qpos[:, :2])
        self.ground_z[:] = self._floor_z[i, j]
        # The implicit command: approach_speed towards the current waypoint, in the body frame.
        to = self.waypoints[self._arange, self.wp_index] - qpos[:, :3]
        to[:, 2] = 0.0
        to *= (cfg.approach_speed / np.maximum(np.hypot(to[:, 0], to[:, 1]), 1e-6))[:, None]
        self.command[:, :2] = _quat_rotate_inv(qpos[:, 3:7], to)[:, :2] * ~last[:, None]
        return super()._step_state()

    def _loco_state(self, sensors: np.ndarray, touch: np.ndarray, first: np.ndarray | None = None,
                    air_at_td: np.ndarray | None = None, ids: np.ndarray | None = None) -> T.LocoState:
        s = super()._loco_state(sensors, touch, first, air_at_td, ids)
        rows = self._arange if ids is None else ids
        qpos = self.backend.qpos[rows]
        quat = qpos[:, 3:7]
        k = self.cfg.waypoints_observed
        idx = np.minimum(self.wp_index[rows, None] + np.arange(k), self.wp_count[rows, None] - 1)  # (m, k)
        rel = self.waypoints[rows[:, None], idx] - qpos[:, None, :3]  # (m, k, 3)
        body = _quat_rotate_inv(np.repeat(quat, k, axis=0), rel.reshape(-1, 3)).reshape(len(rows), 3 * k)
        w, x, y, z = quat.T
        yaw = np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
        noise = self.rng if self.cfg.randomization.observation_noise > 0 else None
        hmap = self.heights.cast(qpos[:, :3], yaw, noise)
        i, j = self._column(qpos[:, :2])
        fields = {f: getattr(s, f) for f in s.__dataclass_fields__}
        return WaypointState(**fields, waypoints=body, height_map=hmap, progress=self._progress[rows],
                             reached=self._reached[rows],
                             headroom=self._ceil_z[i, j] - (qpos[:, 2] + TRUNK_HALF_HEIGHT))

    def _frame(self, s: T.LocoState, rows: np.ndarray | slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        pol = np.concatenate([T.OBS_TERMS[t.name](s) for t in self._policy_terms], axis=1) * self._policy_scale
        noise = self.cfg.randomization.observation_noise
        if noise > 0:
            pol += self.rng.uniform(-1.0, 1.0, pol.shape) * (self._policy_noise * noise)
        priv_raw = [T.OBS_TERMS[t.name](s) for t in PRIVILEGED_TERMS[:-1]] + [self.dr_params[rows]]
        return pol, np.concatenate(priv_raw, axis=1) * self._priv_scale

    def _observe(self, s: T.LocoState) -> Obs:
        pol, priv = self._frame(s)
        obs = self._history.push({"policy": pol, "privileged": priv})
        return {k: v.astype(np.float32) for k, v in obs.items()}

    def _tracking_error(self, s: T.LocoState) -> np.ndarray:
        """Distance to the current waypoint (summed into the episode's error statistic)."""
        return self._target_dist()

    def goal_reached(self) -> np.ndarray:
        """(num_envs,) bool: the env's base is within reach_radius of its last waypoint (the goal)."""
        return (self.wp_index >= self.wp_count - 1) & (self._target_dist() < self.cfg.reach_radius)


@dataclass(frozen=True)
class _Path:
    """The part of a planned path `ConfinedPlanner.replan` reads."""

    polyline: np.ndarray
