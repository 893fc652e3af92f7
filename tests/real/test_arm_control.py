"""The arm runtime: policy checks against the arm config, the action path against the Panda task's own
target arithmetic, and the Cartesian safety layer (box, lead, NaN, stale inputs, frames, e-stop)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from s2r.real.arm import ArmConfig, load_any_robot_config
from s2r.real.arm_controller import ArmController
from s2r.real.arm_runner import ArmRunner, make_runner
from s2r.real.arm_safety import ArmSafetyConfig, CartesianSafety
from s2r.real.metadata import load_metadata
from s2r.real.runner import PolicyMismatchError
from s2r.real.safety import Mode
from s2r.sim import make

from tests.policy_files import GO1_ROBOT, PANDA_ROBOT, PANDA_TASK, export_untrained_panda, with_metadata

DT = 0.05


@pytest.fixture(scope="module")
def arm() -> ArmConfig:
    return load_any_robot_config(PANDA_ROBOT)


@pytest.fixture(scope="module")
def panda_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_untrained_panda(tmp_path_factory.mktemp("panda_policy"))


def graph(out: Path, source: Path, kind: str, seed: int = 0) -> Path:
    """tanh(obs @ W + b) with large weights ("busy": actions all over [-1, 1]), "up" (+z, open) or "nan"."""
    import onnx
    from onnx import TensorProto, helper

    meta = load_metadata(source.with_suffix(".json"))
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((meta.obs_dim, 4)) * (5.0 if kind == "busy" else 0.0)).astype(np.float32)
    b = {"busy": [0.0, 0.0, 0.0, 0.0], "up": [0.0, 0.0, 50.0, -50.0], "nan": [np.nan] * 4}[kind]
    nodes = [helper.make_node("MatMul", ["obs", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["z"]),
             helper.make_node("Tanh", ["z"], ["actions"])]
    inits = [helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.ravel()),
             helper.make_tensor("b", TensorProto.FLOAT, [4], np.asarray(b, dtype=np.float32))]
    g = helper.make_graph(nodes, "arm_test", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", meta.obs_dim])],
                          [helper.make_tensor_value_info("actions", TensorProto.FLOAT, ["batch", 4])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out / "policy.onnx"))
    shutil.copy(source.with_suffix(".json"), out / "policy.json")
    return out / "policy.onnx"


def controller(policy: Path, arm: ArmConfig, **safety: float) -> ArmController:
    runner = ArmRunner(policy, arm)
    ctl = ArmController(runner, CartesianSafety(arm, runner.num_actions, ArmSafetyConfig(**safety)), sync_object=True)
    ctl.activate(0.0)
    return ctl


def feed(ctl: ArmController, env: object, t: float, now: float, frame: str = "world") -> bool:
    """Hand world 0's joint state and object pose to the controller as a robot would report them."""
    qpos, qvel = env.backend.qpos[0], env.backend.qvel[0]
    ctl.on_joint_state(qpos[:9].copy(), qvel[:9].copy(), t, now)
    return ctl.on_object_pose(qpos[9:12].copy(), qpos[12:16].copy(), frame, t, now)


# ---- refusals -----------------------------------------------------------------------------------


def test_arm_policy_on_quadruped_config_and_reverse(panda_policy: Path, go1_policy: Path, arm: ArmConfig) -> None:
    go1 = load_any_robot_config(GO1_ROBOT)
    with pytest.raises(PolicyMismatchError, match=r"moves an end effector .* joint-position robot .*panda.yaml"):
        make_runner(panda_policy, go1)
    with pytest.raises(PolicyMismatchError, match=r"joint_position' but .*panda.yaml describes 'panda', an arm"):
        make_runner(go1_policy, arm)
    assert isinstance(make_runner(panda_policy, arm), ArmRunner)


@pytest.mark.parametrize(("change", "message"), [
    ({"control_dt": 0.02}, "control period differs"),
    ({"robot": "ur5"}, "trained for robot 'ur5'"),
    ({"action": {"max_step": 0.05}}, r"moves the TCP up to 0.0866 m .* allows 0.04 m"),
    ({"action": {"gripper_width": (0.0, 0.12)}}, r"gripper between 0.0 and 0.12 m .* widths \[0.0, 0.08\]"),
])
def test_arm_policy_mismatch(tmp_path: Path, panda_policy: Path, arm: ArmConfig, change: dict, message: str) -> None:
    meta = load_metadata(panda_policy.with_suffix(".json"))
    if "action" in change:
        change = {"action": dataclasses.replace(meta.action, **change["action"])}
    with pytest.raises(PolicyMismatchError, match=message):
        ArmRunner(with_metadata(tmp_path, panda_policy, **change), arm)


# ---- the action path ----------------------------------------------------------------------------


def test_targets_match_the_task(tmp_path: Path, panda_policy: Path, arm: ArmConfig) -> None:
    """Robot-side TCP targets equal the env's own for the actions the policy chose, over whole episodes."""
    ctl = controller(graph(tmp_path, panda_policy, "busy"), arm)
    env = make(PANDA_TASK, 1, seed=5)
    try:
        env.reset(seed=5)
        worst, moved = 0.0, 0.0
        for k in range(120):
            t = k * DT
            assert feed(ctl, env, t, t)
            cmd = ctl.step(t)
            action = ctl.runner.last_action.copy()
            start = env.ee_target[0].copy()
            _, _, term, trunc, _ = env.step(action[None])
            if term[0] or trunc[0]:
                ctl.restart()
                continue
            worst = max(worst, float(np.abs(cmd.position - env.ee_target[0]).max()))
            moved = max(moved, float(np.abs(env.ee_target[0] - start).max()))
            assert cmd.gripper_width == pytest.approx(0.08 * (1.0 - action[3]) / 2)
            assert cmd.orientation == (0.0, 1.0, 0.0, 0.0)
        assert moved > 0.01
        assert worst < 1e-6, f"robot-side TCP target differs from the task's by {worst} m"
        assert ctl.safety.counters["steps_run"] > 100 and ctl.mode is Mode.RUN
    finally:
        env.close()


# ---- safety -------------------------------------------------------------------------------------


def test_target_outside_box_is_clipped_and_counted(tmp_path: Path, panda_policy: Path, arm: ArmConfig) -> None:
    arm = dataclasses.replace(arm, workspace_high=(0.75, 0.35, 0.3))  # 8 cm over the start height
    ctl = controller(graph(tmp_path, panda_policy, "up"), arm)
    env = make(PANDA_TASK, 1, seed=1)
    try:
        env.reset(seed=1)
        for k in range(30):
            feed(ctl, env, k * DT, k * DT)
            cmd = ctl.step(k * DT)
            assert cmd.position[2] <= arm.workspace_high[2] + 1e-12
            env.step(ctl.runner.last_action[None])
        assert cmd.position[2] == pytest.approx(arm.workspace_high[2])
        assert ctl.safety.counters["clamp_workspace"] > 0
    finally:
        env.close()


def test_nan_policy_holds_the_pose_latched(tmp_path: Path, panda_policy: Path, arm: ArmConfig) -> None:
    ctl = controller(graph(tmp_path, panda_policy, "nan"), arm)
    env = make(PANDA_TASK, 1, seed=2)
    try:
        env.reset(seed=2)
        feed(ctl, env, 0.0, 0.0)
        cmd = ctl.step(0.0)
        assert ctl.mode is Mode.FAULT and ctl.safety.counters["nonfinite_action"] == 1
        assert np.allclose(cmd.position, ctl.state.ee_pos) and np.isfinite(cmd.position).all()
        feed(ctl, env, DT, DT)
        assert ctl.step(DT).position.tolist() == cmd.position.tolist() and ctl.mode is Mode.FAULT
    finally:
        env.close()


def test_object_frame_and_staleness(tmp_path: Path, panda_policy: Path, arm: ArmConfig) -> None:
    ctl = controller(graph(tmp_path, panda_policy, "busy"), arm, object_timeout_s=0.25)
    env = make(PANDA_TASK, 1, seed=3)
    try:
        env.reset(seed=3)
        assert not feed(ctl, env, 0.0, 0.0, frame="camera_link")  # refused: no step
        assert ctl.safety.counters["bad_object_frame"] == 1 and ctl.object_stamp is None
        assert feed(ctl, env, 0.0, 0.0)
        ctl.step(0.0)
        # The tracker goes silent for 0.5 s while joint states keep coming: hold the measured TCP.
        qpos, qvel = env.backend.qpos[0], env.backend.qvel[0]
        for k in range(1, 11):
            ctl.on_joint_state(qpos[:9].copy(), qvel[:9].copy(), k * DT, k * DT)
            held = ctl.tick(k * DT + 0.08)
        assert ctl.mode is Mode.DAMPING and ctl.safety.counters["object_timeouts"] == 1
        assert np.allclose(held.position, ctl.state.ee_pos)
        feed(ctl, env, 0.6, 0.6)
        ctl.tick(0.6)
        assert ctl.mode is Mode.RUN and ctl.safety.counters["watchdog_recoveries"] == 1
    finally:
        env.close()


def test_estop_latches_until_reset(tmp_path: Path, panda_policy: Path, arm: ArmConfig) -> None:
    ctl = controller(graph(tmp_path, panda_policy, "busy"), arm)
    env = make(PANDA_TASK, 1, seed=4)
    try:
        env.reset(seed=4)
        feed(ctl, env, 0.0, 0.0)
        ctl.step(0.0)
        cmd = ctl.on_estop(True)
        assert ctl.mode is Mode.ESTOP and np.allclose(cmd.position, ctl.state.ee_pos)
        ctl.on_estop(False)
        feed(ctl, env, DT, DT)
        assert ctl.mode is Mode.ESTOP
        assert ctl.reset() and ctl.mode is Mode.RUN
    finally:
        env.close()
