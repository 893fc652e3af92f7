"""Task definitions. Importing this package registers every task."""

from dataclasses import replace

from s2r.sim.env import VecEnv
from s2r.sim.registry import register_device_task, register_task
from s2r.sim.tasks.confined import ConfinedWaypointConfig, ConfinedWaypointEnv, WaypointRewardConfig
from s2r.sim.tasks.crouch_steps import CrouchStepsConfig, CrouchStepsEnv
from s2r.sim.tasks.crouch_walk import CrouchWalkConfig, CrouchWalkEnv
from s2r.sim.tasks.locomotion import LocomotionConfig, LocomotionEnv
from s2r.sim.tasks.manipulation import (
    ALL_PRIVILEGES,
    DRAWER_PRIVILEGES,
    DrawerCubeConfig,
    DrawerCubeEnv,
    FlatBoxLiftConfig,
    FlatBoxLiftEnv,
    InsertConfig,
    InsertEnv,
    LiftConfig,
    LiftEnv,
    PickPlaceConfig,
    PickPlaceEnv,
)
from s2r.sim.tasks.puck import PuckConfig, PuckEnv
from s2r.sim.tasks.quadrotor import ReplanConfig, ReplanEnv
from s2r.sim.tasks.terrain import TerrainVelocityConfig, TerrainVelocityEnv
from s2r.sim.tasks.velocity import CommandConfig
from s2r.sim.tasks.wide_randomization import ood_config

register_task(
    "Go1-Velocity-Flat",
    LocomotionEnv,
    LocomotionConfig(),
    "Go1-class quadruped tracks a commanded forward speed and yaw rate on flat ground.",
)
register_task(
    "Go1-Velocity-Height-Flat",
    CrouchWalkEnv,
    CrouchWalkConfig(commands=CommandConfig(ang_vel_z=(-1.0, 1.0))),  # yaw as the skills baseline commands it
    "Go1-class quadruped tracks a forward speed, a yaw rate and a body height (0.17-0.30 m: crouching) on flat "
    "ground; the confined-space policies' warm start.",
)
register_task(
    "Go1-Velocity-Height-Steps",
    CrouchStepsEnv,
    CrouchStepsConfig(commands=CommandConfig(ang_vel_z=(-1.0, 1.0))),
    "Go1-Velocity-Height-Flat on a field of random step-ups (flat-topped blocks 0.03-0.15 m high): the confined "
    "policies' warm start that crouches and climbs.",
)
register_task(
    "Go1-Velocity-Rough",
    LocomotionEnv,
    LocomotionConfig(terrain="rough"),
    "Go1-class quadruped velocity tracking on a rough heightfield (6 cm bumps).",
)
register_task(
    "Go1-Velocity-FlatNoDR",
    LocomotionEnv,
    replace(
        LocomotionConfig(),
        randomization=replace(
            LocomotionConfig().randomization,
            friction=(1.0, 1.0), added_mass=(0.0, 0.0), motor_strength=(1.0, 1.0),
            push_velocity=0.0, observation_noise=0.0, action_latency_steps=(0, 0),
        ),
    ),
    "Flat-ground velocity tracking with no domain randomisation (for debugging and quick tests).",
)
register_task(
    "Go1-Velocity-Terrain",
    TerrainVelocityEnv,
    TerrainVelocityConfig(),
    "Go1-class quadruped velocity tracking on a curriculum of slopes, stairs, rough ground and stepping gaps "
    "(8 levels), wide dynamics randomisation; privileged group has the 16 dynamics draws and an 11x7 height scan.",
)
register_task(
    "Go1-Velocity-Terrain-OOD",
    TerrainVelocityEnv,
    replace(TerrainVelocityConfig(), randomization=ood_config(TerrainVelocityConfig().randomization)),
    "Go1-Velocity-Terrain with held-out dynamics ranges outside the training ones (evaluation only).",
)
register_task(
    "Puck-Velocity-Flat",
    PuckEnv,
    PuckConfig(),
    "Planar puck tracks a commanded (vx, vy, yaw rate); learns in seconds (used by the learning tests).",
)

register_task(
    "Panda-Lift-Cube",
    LiftEnv,
    LiftConfig(),
    "Panda arm lifts a randomised cube 5 cm off the table; sparse reward, end-effector delta actions.",
)
register_task(
    "Panda-PickPlace-Cube",
    PickPlaceEnv,
    PickPlaceConfig(),
    "Panda arm brings a randomised cube within 2.5 cm of a random target point (on the table or in the air).",
)
register_task(
    "Panda-Insert-Peg",
    InsertEnv,
    InsertConfig(),
    "Panda arm pushes a grasped square peg 2 cm into a randomly placed socket with 1-2 mm clearance.",
)
register_task(
    "Panda-Lift-FlatBox",
    FlatBoxLiftEnv,
    FlatBoxLiftConfig(),
    "Panda arm lifts a flat box whose long side points at a ledge: turn it >= 80 deg first (the fingers cannot span it).",
)
register_task(
    "Panda-Lift-FlatBox-Privileged",
    FlatBoxLiftEnv,
    FlatBoxLiftConfig(privileged=ALL_PRIVILEGES),
    "Panda-Lift-FlatBox with every privileged action (virtual wrench, no table collision, wider joints, lighter "
    "box) at scale 1, for `--algo ppo-privileged` (sim only; exports drop them).",
)
register_task(
    "Panda-Drawer-Cube",
    DrawerCubeEnv,
    DrawerCubeConfig(),
    "Panda arm pulls a drawer >= 10 cm open, then puts a randomised cube in it (two stages; a few reward terms).",
)
register_task(
    "Panda-Drawer-Cube-Privileged",
    DrawerCubeEnv,
    DrawerCubeConfig(privileged=DRAWER_PRIVILEGES),
    "Panda-Drawer-Cube with its privileged actions (virtual wrench on the cube, force on the drawer's slide, no "
    "table/cabinet collision for the hand, lighter cube) at scale 1, for `--algo ppo-privileged` (sim only).",
)
register_task(
    "Crazyflie-Replan-Waypoints",
    ReplanEnv,
    ReplanConfig(),
    "Crazyflie time allocation through 3-6 random waypoints (one-step bandit); reward = time saved over the "
    "heuristic when the minimum-snap plan passes the flatness check.",
)
register_task(
    "Go1-Waypoints-Confined",
    ConfinedWaypointEnv,
    ConfinedWaypointConfig(),
    "Go1-class quadruped follows planner waypoints through a procedural tunnel (low ceilings, narrow corridors, "
    "overhangs, steps, voids); observes waypoints, proprioception and a ray-cast floor/ceiling map.",
)

_R = WaypointRewardConfig()
register_task(
    "Go1-Goal-Confined",
    ConfinedWaypointEnv,
    ConfinedWaypointConfig(command_mode="goal", waypoints_observed=1),
    "Baseline of Go1-Waypoints-Confined, end to end: the policy sees only the global goal (no planner), rewarded "
    "for progress towards it; same maps, proprioception and height map.",
)
register_task(
    "Go1-Skills-Confined",
    ConfinedWaypointEnv,
    ConfinedWaypointConfig(command_mode="skills", rewards=replace(
        _R, waypoint_progress=replace(_R.waypoint_progress, weight=0.0),
        waypoint_reached=replace(_R.waypoint_reached, weight=0.0),
        track_lin_vel_xy=replace(_R.track_lin_vel_xy, weight=1.5), track_ang_vel_z=replace(_R.track_ang_vel_z, weight=0.75),
        track_body_height=replace(_R.track_body_height, weight=1.0))),
    "Baseline of Go1-Waypoints-Confined, parameterised skills: the planner's path becomes velocity and body-height "
    "commands the policy is rewarded for tracking.",
)


def _torch_locomotion(cfg: LocomotionConfig, num_envs: int = 1, seed: int = 0) -> VecEnv:
    # Imported on use: torch, warp and mujoco_warp are slow to import and optional (the gpu extra).
    from s2r.sim.backends.warp_env import TorchLocomotionEnv

    return TorchLocomotionEnv(cfg, num_envs=num_envs, seed=seed)


# The flat Go1 tasks also run device-resident on the warp backend (torch in, torch out; no host copies).
register_device_task("Go1-Velocity-Flat", _torch_locomotion)
register_device_task("Go1-Velocity-FlatNoDR", _torch_locomotion)
