"""The arm controller with a camera policy (no ROS): no frame, a stopped camera or a refused frame holds the
pose without latching; fresh frames run the policy again from the measured TCP; frame ages are recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from s2r.real.arm import load_any_robot_config
from s2r.real.arm_controller import ArmController
from s2r.real.arm_runner import ArmRunner
from s2r.real.arm_safety import ArmSafetyConfig, CartesianSafety
from s2r.real.runner import RunnerConfig
from s2r.real.safety import Mode
from s2r.sim import make

from tests.policy_files import PANDA_ROBOT, PANDA_TASK

DT = 0.05
SIZE = (32, 32)  # the session fixture `camera_policy` (tests/real/conftest.py)


def make_controller(policy: Path, lockstep: bool) -> tuple[ArmController, np.ndarray, np.ndarray]:
    """An activated controller on the camera policy (frames older than 0.3 s refused), and a start pose."""
    arm = load_any_robot_config(PANDA_ROBOT)
    runner = ArmRunner(policy, arm, RunnerConfig(max_image_age_s=0.3))
    safety = CartesianSafety(arm, runner.num_actions, ArmSafetyConfig(watchdog_timeout_s=10.0, object_timeout_s=10.0))
    ctl = ArmController(runner, safety, sync_object=lockstep)
    ctl.activate(0.0)
    env = make(PANDA_TASK, 1, seed=0)
    env.reset(seed=0)
    qpos, qvel = env.backend.qpos[0].copy(), env.backend.qvel[0].copy()
    env.close()
    return ctl, qpos, qvel


def test_camera_holds_and_recoveries(camera_policy: Path) -> None:
    ctl, qpos, qvel = make_controller(camera_policy, lockstep=False)
    safety = ctl.safety
    rng = np.random.default_rng(0)
    c = safety.counters

    def step(k: int, frame_at: float | None = None, frame: np.ndarray | None = None) -> object:
        """Control period k (sensor time k*DT, arrival time the same), optionally with a frame first."""
        t = k * DT
        if frame_at is not None:
            img = frame if frame is not None else rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
            ctl.on_image("workspace", img, frame_at, t)
        ctl.on_joint_state(qpos[:9], qvel[:9], t, t)
        ctl.on_object_pose(qpos[9:12], qpos[12:16], "world", t, t)
        return ctl.step(t)

    # No frame yet: held at the measured TCP, counted, not latched.
    cmd = step(1)
    assert ctl.mode is Mode.DAMPING and c["camera_holds"] == 1 and c["steps_run"] == 0
    np.testing.assert_allclose(cmd.position, ctl.state.ee_pos)
    # Frames flow: the policy runs; the age of the frame against the state is recorded (one period old here).
    for k in range(2, 8):
        step(k, frame_at=(k - 1) * DT)
    assert ctl.mode is Mode.RUN and c["steps_run"] == 6 and c["watchdog_recoveries"] == 1
    p50, p99 = ctl.image_age_quantiles(0.5, 0.99)
    assert 0.045 < p50 < 0.056 and p99 < 0.056
    # The camera stops: once its last frame (arrived at 0.35 s) is older than 0.3 s the pose is held.
    for k in range(8, 13):
        step(k)
    assert ctl.mode is Mode.RUN  # 0.25 s since the last frame arrived: still fresh
    step(13)  # 0.30 s: the boundary
    held = [step(k).position for k in range(14, 18)]
    assert ctl.mode is Mode.DAMPING and c["camera_holds"] >= 4 and c["steps_fault"] == 0
    assert all(np.allclose(h, ctl.state.ee_pos) for h in held)
    # A wrong-size frame while frames otherwise flow: refused, counted, held until a good one comes.
    step(18, frame_at=18 * DT)
    assert ctl.mode is Mode.RUN
    step(19, frame_at=19 * DT, frame=np.zeros((8, 8, 3), np.uint8))
    assert ctl.mode is Mode.DAMPING and c["bad_image"] == 1
    step(20, frame_at=20 * DT)
    assert ctl.mode is Mode.RUN and ctl.last_target is not None
    # On resuming the target starts again from the measured TCP (plus at most one limited step): no jump.
    assert np.linalg.norm(ctl.last_target - ctl.state.ee_pos) <= safety.max_step + 1e-9


def test_lockstep_waits_for_the_frame_of_the_same_stamp(camera_policy: Path) -> None:
    """In lockstep a step is due once joint state, object pose and every camera's frame carry one stamp, whichever
    of them comes last; a frame of another stamp (an older render) is no reason to step."""
    ctl, qpos, qvel = make_controller(camera_policy, lockstep=True)
    frame = np.zeros((*SIZE, 3), np.uint8)
    assert not ctl.on_joint_state(qpos[:9], qvel[:9], 0.05, 0.05)
    assert not ctl.on_object_pose(qpos[9:12], qpos[12:16], "world", 0.05, 0.05)
    assert not ctl.on_image("workspace", frame, 0.0, 0.05)  # last state's frame
    assert ctl.on_image("workspace", frame, 0.05, 0.06)  # this state's frame, last to arrive: step now
    ctl.step(0.06)
    assert ctl.safety.counters["steps_run"] == 1 and ctl.image_age_quantiles(0.5) == [0.0005]
    assert not ctl.on_image("workspace", frame, 0.10, 0.10)  # frame first this time
    assert not ctl.on_joint_state(qpos[:9], qvel[:9], 0.10, 0.10)
    assert ctl.on_object_pose(qpos[9:12], qpos[12:16], "world", 0.10, 0.10)
