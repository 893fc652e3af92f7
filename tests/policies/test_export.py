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
from s2r.sim.env import sample_obs


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
    assert meta.schema_version == SCHEMA_VERSION and meta.task_id == task
    assert meta.obs_dim == model.actor_dim == x.shape[1]
    assert meta.history_length == spec.history_length
    assert [t.name for t in meta.obs_terms] == [t.name for t in spec.obs_terms["policy"]]
    assert meta.action_names == spec.action_names and meta.control_dt == spec.control_dt
    assert meta.action_offset == tuple(spec.extras["default_joint_pos"])
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


@pytest.mark.parametrize(("break_it", "expected"), [
    (lambda d: {**d, "schema_version": 99}, "schema_version 99; this runtime reads 1"),
    (lambda d: _drop(d, "schema_version"), "schema_version None"),
    (lambda d: {**d, "velocity_limits": [1.0]}, "unknown fields ['velocity_limits']"),
    (lambda d: _drop(d, "control_dt"), "missing or has malformed fields"),
    (lambda d: {**d, "obs_dim": 44}, "obs_dim 44 != sum of term sizes 45 x history_length 1"),
    (lambda d: {**d, "history_length": 2}, "x history_length 2"),
    (lambda d: {**d, "kp": d["kp"][:11]}, "'kp' has 11 values for 12 actions"),
    (lambda d: {**d, "action_scale": d["action_scale"] + [0.25]}, "'action_scale' has 13 values for 12 actions"),
    (lambda d: {**d, "obs_terms": [{**d["obs_terms"][0], "start": 1}, *d["obs_terms"][1:]]},
     "'base_ang_vel' starts at 1, expected 0"),
    (lambda d: {**d, "obs_terms": [{**d["obs_terms"][0], "offset": 2}, *d["obs_terms"][1:]]},
     "missing or has malformed fields"),
    (lambda d: {**d, "control_dt": 0.0}, "control_dt must be positive"),
])
def test_bad_metadata_names_the_problem(good_metadata: dict, tmp_path: Path, break_it, expected: str) -> None:
    path = _write(tmp_path, break_it(good_metadata))
    with pytest.raises(MetadataError) as err:
        load_metadata(path)
    assert expected in str(err.value)


def test_unreadable_metadata_files(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="not found"):
        load_metadata(tmp_path / "missing.json")
    bad = tmp_path / "policy.json"
    bad.write_text("{not json")
    with pytest.raises(MetadataError, match="is not valid JSON"):
        load_metadata(bad)
