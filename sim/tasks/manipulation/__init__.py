"""Panda arm manipulation: lift a cube, pick-and-place it, insert a peg, lift a flat box, put a cube in a drawer.

Sparse rewards (a few shaped terms on the two multi-stage tasks), task-space actions.

A Panda-class 7-DoF arm (`panda.xml`) stands at the edge of a table. The policy commands the end effector,
not the joints: each action row is (dx, dy, dz, grip) in [-1, 1], a translation of the tool centre point
(TCP) target by up to `arm.max_step` metres per axis and a gripper command (-1 open ... +1 closed). The hand
stays pointing down with a fixed yaw. Once per control step a damped-least-squares differential IK on the
TCP Jacobian (from `mj_jacSite`) turns the Cartesian target into joint position targets for the arm's
position servos, with a small pull towards the ready pose in the Jacobian's null space; physics then runs
for the control period on the CPU backend (`mujoco.rollout`, native threads) while the servo targets ramp
from the old to the new values in `arm.interp_steps` stages (and a 10 ms first-order filter in the
actuators smooths the stages), as a robot controller interpolates between policy steps. The arm carries
out a command within about one control step.

Rewards are sparse and binary: 1.0 on the step the task succeeds, which also ends the episode (terminated);
0 otherwise. Episodes also end when the object falls off the table (terminated, reward 0) or at the time
limit (truncated). Object pose, size, mass and friction are randomised at every reset (and the socket pose
and clearance for the insertion task). `info["success"]` is the (num_envs,) success flag of every st

The package splits the jobs: `configs` (task configs), `kinematics` (TCP kinematics and IK), `terms`
(state, observation terms, success tests), `geometry` (run-time model edits), `base` (the env and its step),
`tasks` (the three tasks), `flatbox` (the flat-box lift), `drawer` (open a drawer, then put the cube in it),
`privileged` (sim-only privileged actions).
Everything is importable from `s2r.sim.tasks.manipulation` as before.
"""

from s2r.sim.tasks.manipulation.base import ACTION_NAMES, PandaEnv
from s2r.sim.tasks.manipulation.configs import (
    ALL_PRIVILEGES,
    ArmControlConfig,
    CubeRandomizationConfig,
    FlatBoxLiftConfig,
    FlatBoxRandomizationConfig,
    FlatBoxRewardConfig,
    InsertConfig,
    LiftConfig,
    PandaTaskConfig,
    PegRandomizationConfig,
    PickPlaceConfig,
)
from s2r.sim.tasks.manipulation.drawer import (
    DRAWER_PRIVILEGES,
    DrawerCubeConfig,
    DrawerCubeEnv,
    DrawerCubeRewardConfig,
    DrawerRandomizationConfig,
    in_tray,
)
from s2r.sim.tasks.manipulation.flatbox import FlatBoxLiftEnv, long_axis, lowest_corner_height, turn_angle, turn_term
from s2r.sim.tasks.manipulation.geometry import refit_bvh, set_box
from s2r.sim.tasks.manipulation.kinematics import ARM_DOF, FINGER_MAX, HOME_Q, R_DOWN, quat_z_axis, yaw_quat
from s2r.sim.tasks.manipulation.privileged import (
    FixtureForce,
    PrivilegedAction,
    ReducedGravity,
    RelaxedHold,
    TableCollisionOff,
    VirtualWrench,
    WiderJointLimits,
    parse_privileged,
)
from s2r.sim.tasks.manipulation.tasks import InsertEnv, LiftEnv, PickPlaceEnv
from s2r.sim.tasks.manipulation.terms import (
    OBS_TERMS,
    TABLE_CENTER,
    TABLE_HALF,
    PandaState,
    insert_success,
    lift_success,
    obs_slices,
    reach_success,
)

__all__ = [
    "ACTION_NAMES",
    "ALL_PRIVILEGES",
    "ARM_DOF",
    "DRAWER_PRIVILEGES",
    "FINGER_MAX",
    "HOME_Q",
    "OBS_TERMS",
    "R_DOWN",
    "TABLE_CENTER",
    "TABLE_HALF",
    "ArmControlConfig",
    "CubeRandomizationConfig",
    "DrawerCubeConfig",
    "DrawerCubeEnv",
    "DrawerCubeRewardConfig",
    "DrawerRandomizationConfig",
    "FixtureForce",
    "FlatBoxLiftConfig",
    "FlatBoxLiftEnv",
    "FlatBoxRandomizationConfig",
    "FlatBoxRewardConfig",
    "InsertConfig",
    "InsertEnv",
    "LiftConfig",
    "LiftEnv",
    "PandaEnv",
    "PandaState",
    "PandaTaskConfig",
    "PegRandomizationConfig",
    "PickPlaceConfig",
    "PickPlaceEnv",
    "PrivilegedAction",
    "ReducedGravity",
    "RelaxedHold",
    "TableCollisionOff",
    "VirtualWrench",
    "WiderJointLimits",
    "in_tray",
    "insert_success",
    "lift_success",
    "long_axis",
    "lowest_corner_height",
    "obs_slices",
    "parse_privileged",
    "quat_z_axis",
    "reach_success",
    "refit_bvh",
    "set_box",
    "turn_angle",
    "turn_term",
    "yaw_quat",
]
