"""ONNX export: parity with torch through onnxruntime, and the policy.json contract and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from s2r.policies.export import ExportError, build_metadata, export_policy
from s2r.policies.networks import ActorCritic, ActorCriticConfig
from s2r.real.metadata import SCHEMA_VERSION, MetadataError, load_metadata
from s2r.sim import make, task_config
from s2r.sim.env import EnvSpec, GroupSpec, ObsTerm, sample_obs


def _model_and_obs(task: str, overrides: dict | None = None, seed: int = 0):
    """A fresh actor-critic whose normaliser has seen real observations, the env spec, and test inputs."""
    torch.manual_seed(seed)
    env = make(task, 8, cfg=task_config(task, overrides), seed=seed)
    try:
        obs = sample_obs(env, 15, seed=seed)
        spec, dims = env.spec, env.obs_dims
    finally:
        env.close()
    model = ActorCritic(dims, spec.action_dim, ActorCriticConfig())
    model.update_normalizers(torch.from_numpy(obs["policy"]), torch.from_numpy(
        np.concatenate([obs["policy"], obs["privileged"]], axis=1)))
    # A trained-looking actor: non-trivial weights in the last layer too.
    torch.nn.init.normal_(model.actor[-1].weight, std=0.3)
    return model.eval(), spec, obs["policy"]


@pytest.mark.parametrize(("task", "overrides"), [
    ("Go1-Velocity-Flat", None),
    ("Go1-Velocity-Flat", {"history_length": 3}),
    ("Puck-Velocity-Flat", None),
])
def test_export_parity_and_metadata(task: str, overrides: dict | None, tmp_path: Path) -> None:
    model, spec, x = _model_and_obs(task, overrides)
    half = len(x) // 2
    parity = export_policy(model, spec, task, tmp_path, x[:half])
    assert parity["max_abs_diff"] <= 1e-5

    # Independent check on observations the export never saw, and at batch 1 (what the robot runs).
    sess = ort.InferenceSession(str(tmp_path / "policy.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = model.act_mean(torch.from_numpy(x[half:])).numpy()
    got = sess.run(["actions"], {"obs": x[half:]})[0]
    assert np.max(np.abs(got - want)) <= 1e-5
    one = sess.run(["actions"], {"obs": x[half : half + 1]})[0]
    assert one.shape == (1, spec.action_dim) and np.max(np.abs(one - want[:1])) <= 1e-5

    meta = load_metadata(tmp_path / "policy.json")
    assert meta.schema_version == SCHEMA_VERSION == 2 and meta.task_id == task and meta.algo == "ppo"
    assert meta.obs_dim == model.actor_dim == x.shape[1]
    assert meta.obs.history_length == spec.history_length and meta.obs.group == "policy"
    assert [t.name for t in meta.obs.terms] == [t.name for t in spec.obs_terms["policy"]]
    assert meta.action_names == spec.action_names and meta.control_dt == spec.control_dt
    assert meta.action.kind == "joint_position" and meta.action.offset == tuple(spec.extras["default_joint_pos"])
    assert meta.action.kp == tuple(spec.extras["kp"]) and meta.action.lower == tuple(spec.extras["joint_lower"])
    # Velocity tasks: a velocity command with the ranges the task config trained on.
    commands = task_config(task, overrides).commands
    assert meta.command.kind == "velocity" and meta.command.vx == commands.lin_vel_x and meta.command.wz == commands.ang_vel_z
    assert meta.chunking is None and meta.residual is None and meta.planner is None and meta.info == {}
    assert meta.normalizer_in_graph and (meta.onnx_input, meta.onnx_output) == ("obs", "actions")
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "policy.onnx.bad").exists()


def test_export_refuses_observations_of_the_wrong_width(tmp_path: Path) -> None:
    model, spec, x = _model_and_obs("Puck-Velocity-Flat")
    with pytest.raises(ExportError, match="the actor reads 9 values"):
        export_policy(model, spec, "Puck-Velocity-Flat", tmp_path, x[:, :-1])


def test_export_fails_loudly_when_parity_fails(tmp_path: Path) -> None:
    model, spec, x = _model_and_obs("Puck-Velocity-Flat")
    with pytest.raises(ExportError, match="ONNX parity failed"):
        export_policy(model, spec, "Puck-Velocity-Flat", tmp_path, x, tol=-1.0)
    assert (tmp_path / "policy.onnx.bad").exists() and not (tmp_path / "policy.onnx").exists()


# ---- policy.json errors --------------------------------------------------------------------------


@pytest.fixture
def good_metadata(tmp_path: Path) -> dict:
    """A valid policy.json for Go1-Velocity-Flat, as a dict."""
    env = make("Go1-Velocity-Flat", 1)
    try:
        meta = build_metadata(env.spec, "Go1-Velocity-Flat", env.obs_dims["policy"])
    finally:
        env.close()
    return json.loads(meta.to_json())


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(data))
    return path


def test_valid_metadata_loads(good_metadata: dict, tmp_path: Path) -> None:
    meta = load_metadata(_write(tmp_path, good_metadata))
    assert meta.obs_dim == 45 and len(meta.action_names) == 12


def _drop(data: dict, key: str) -> dict:
    return {k: v for k, v in data.items() if k != key}


def _obs(d: dict, **changes) -> dict:
    return {**d, "observation": [{**d["observation"][0], **changes}]}


def _action(d: dict, **changes) -> dict:
    return {**d, "action": {**d["action"], **changes}}


@pytest.mark.parametrize(("break_it", "expected"), [
    (lambda d: {**d, "schema_version": 99}, "schema_version 99; this runtime reads 1 and 2"),
    (lambda d: _drop(d, "schema_version"), "schema_version None"),
    (lambda d: {**d, "velocity_limits": [1.0]}, "unknown field 'velocity_limits'"),
    (lambda d: _drop(d, "control_dt"), "missing field 'control_dt'"),
    (lambda d: _drop(d, "algo"), "missing field 'algo'"),
    (lambda d: _obs(d, shape=[44]), "obs_dim 44 != sum of term sizes 45 x history_length 1"),
    (lambda d: _obs(d, history_length=2), "x history_length 2"),
    (lambda d: _action(d, kp=d["action"]["kp"][:11]), "action 'kp' has 11 values for 12 actions"),
    (lambda d: _action(d, scale=d["action"]["scale"] + [0.25]), "action 'scale' has 13 values for 12 actions"),
    (lambda d: _obs(d, terms=[{**d["observation"][0]["terms"][0], "start": 1}, *d["observation"][0]["terms"][1:]]),
     "'base_ang_vel' starts at 1, expected 0"),
    (lambda d: _obs(d, terms=[{**d["observation"][0]["terms"][0], "offset": 2}, *d["observation"][0]["terms"][1:]]),
     "unknown field 'observation[0].terms[0].offset'"),
    (lambda d: {**d, "control_dt": 0.0}, "control_dt must be positive"),
    # Wrong types, named by their path in the file.
    (lambda d: {**d, "control_dt": "0.02"}, "'control_dt' must be a number, got '0.02'"),
    (lambda d: _action(d, kp=["high"] * 12), "'action.kp[0]' must be a number, got 'high'"),
    (lambda d: _obs(d, shape=[45.5]), "'observation[0].shape[0]' must be an integer, got 45.5"),
    (lambda d: _obs(d, history_length=True), "'observation[0].history_length' must be an integer, got True"),
    (lambda d: {**d, "command": {"kind": "velocity", "vx": [0.0, 1.0, 2.0]}}, "'command.vx' must hold 2 values, got 3"),
    # Kinds: unknown ones are named with the known ones; a kind's unknown field is named.
    (lambda d: _action(d, kind="torque"),
     "action kind 'torque' is not one this runtime knows; known kinds: joint_position, ee_delta, segment_time_ratio, box"),
    (lambda d: {**d, "command": {"kind": "pose"}},
     "command kind 'pose' is not one this runtime knows; known kinds: velocity, waypoints, none"),
    (lambda d: _action(d, max_step=0.02), "unknown field 'action.max_step'"),
    (lambda d: {**d, "planner": {"limits": {}}}, "a 'planner' section goes with the 'segment_time_ratio' action kind only"),
    (lambda d: _obs(d, camera="wrist"), "reads camera 'wrist', so it must be uint8"),
])
def test_bad_metadata_names_the_problem(good_metadata: dict, tmp_path: Path, break_it, expected: str) -> None:
    path = _write(tmp_path, break_it(good_metadata))
    with pytest.raises(MetadataError) as err:
        load_metadata(path)
    assert expected in str(err.value) and str(path) in str(err.value)


def test_unreadable_metadata_files(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="not found"):
        load_metadata(tmp_path / "missing.json")
    bad = tmp_path / "policy.json"
    bad.write_text("{not json")
    with pytest.raises(MetadataError, match="is not valid JSON"):
        load_metadata(bad)


# ---- action and command kinds derived from the env spec -------------------------------------------


def test_panda_metadata_is_an_ee_delta_action_without_a_command() -> None:
    """The Panda tasks keep their task-space action: step size, gripper, clip; no joint gains or ±1 "joint" box."""
    env = make("Panda-Lift-Cube", 1)
    try:
        spec, cfg = env.spec, env.cfg
        meta = build_metadata(spec, "Panda-Lift-Cube", env.obs_dims["policy"], algo="bc")
    finally:
        env.close()
    act = meta.action
    assert act.kind == "ee_delta" and act.names == ("ee_dx", "ee_dy", "ee_dz", "gripper")
    assert act.max_step == cfg.arm.max_step and act.clip == cfg.action_clip and act.gripper_index == 3
    assert act.gripper_width == (0.0, 0.08) and act.gripper_closed == 1.0
    assert not hasattr(act, "kp") and meta.command.kind == "none" and meta.algo == "bc"


def _spec(**extras) -> EnvSpec:
    return EnvSpec(groups={"policy": GroupSpec(terms=(ObsTerm(name="theta", size=3),))}, action_names=("torque",),
                   control_dt=0.05,
                   max_episode_steps=200, extras=extras)


def test_box_action_maps_the_network_range_onto_the_env_box() -> None:
    meta = build_metadata(_spec(action_space="box", action_low=[-2.0], action_high=[2.0]), "gym:Pendulum-v1", 3,
                          algo="sac")
    act = meta.action
    assert act.kind == "box" and act.low == (-2.0,) and act.high == (2.0,) and meta.command.kind == "none"
    # env_action = offset + scale * network_output: the squashed output's ends reach the box's ends.
    assert [act.offset[0] + act.scale[0] * y for y in (-1.0, 0.0, 1.0)] == [-2.0, 0.0, 2.0]
    shifted = build_metadata(_spec(action_space="box", action_low=[0.0], action_high=[1.0]), "gym:X-v0", 3).action
    assert (shifted.offset, shifted.scale) == ((0.5,), (0.5,))
    unbounded = build_metadata(_spec(action_space="box", action_low=[-np.inf], action_high=[np.inf]), "gym:X-v0", 3).action
    assert (unbounded.offset, unbounded.scale) == ((0.0,), (1.0,))


def test_spec_without_what_its_action_kind_needs_is_refused() -> None:
    with pytest.raises(ExportError, match=r"spec.extras\['action_space'\] is 'torque'; known action spaces: joint_position"):
        build_metadata(_spec(action_space="torque"), "gym:X-v0", 3)
    with pytest.raises(ExportError, match="lacks 'action_low' / 'action_high'"):
        build_metadata(_spec(action_space="box"), "gym:X-v0", 3)
    with pytest.raises(ExportError, match="no 'max_step'"):
        build_metadata(_spec(action_space="ee_delta"), "Panda-X-Y", 3)
