"""The policy runner: refusal messages, observation terms and history, action mapping and ramp-in."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from s2r.real.metadata import MetadataError, TermSpec, load_metadata
from s2r.real.observation import ObservationBuilder, RobotState, projected_gravity
from s2r.real.robot import RobotConfig, RobotConfigError, robot_config_from_dict
from s2r.real.runner import PolicyMismatchError, PolicyRunner, RunnerConfig

from tests.policy_files import with_metadata, with_obs


def _state(q: np.ndarray) -> RobotState:
    return RobotState(q.copy(), np.zeros(12), np.array([1.0, 0.0, 0.0, 0.0]), np.zeros(3))


def test_go1_policy_loads(go1_policy: Path, robot: RobotConfig) -> None:
    r = PolicyRunner(go1_policy, robot)
    assert r.meta.obs_dim == 45 and r.num_actions == 12


@pytest.mark.parametrize(("change", "words"), [
    ({"joint_names": "swap"}, "joint order differs: position 0 is 'FR_hip_joint' in .* but 'FL_hip_joint'"),
    ({"joint_names": "rename"}, "joint names differ"),
    ({"control_dt": 0.01}, "control period differs"),
    ({"kp": (20.0,) * 12}, "gain 'kp' of joint 'FR_hip_joint'"),
    ({"name": "a1"}, "trained for robot 'Go1'"),
])
def test_robot_mismatch_is_refused_by_name(go1_policy: Path, robot: RobotConfig, change: dict, words: str) -> None:
    names = list(robot.joint_names)
    if change.get("joint_names") == "swap":
        names[0], names[3] = names[3], names[0]
        change = {"joint_names": tuple(names)}
    elif change.get("joint_names") == "rename":
        change = {"joint_names": ("front_right_hip", *names[1:])}
    other = dataclasses.replace(robot, **change, source="robots/other.yaml")
    with pytest.raises(PolicyMismatchError, match=words) as err:
        PolicyRunner(go1_policy, other)
    assert "robots/other.yaml" in str(err.value) or "robot" in str(err.value)


def test_observation_size_mismatch_is_refused(go1_policy: Path, robot: RobotConfig, tmp_path: Path) -> None:
    meta = load_metadata(go1_policy.with_suffix(".json"))
    # policy.json claims a 46-wide input: the ONNX graph takes 45.
    terms = (*meta.obs.terms[:-1], dataclasses.replace(meta.obs.terms[-1], size=13))
    bad = with_metadata(tmp_path / "bad", go1_policy, observation=with_obs(meta, terms=terms, shape=(46,)).observation)
    with pytest.raises(MetadataError, match="observation size"):
        PolicyRunner(bad, robot)


def test_wrong_width_graph_is_refused(graphs: dict[str, Path], robot: RobotConfig) -> None:
    with pytest.raises(PolicyMismatchError, match=r"action size differs: .* outputs 11 values for 12 joints"):
        PolicyRunner(graphs["wide"], robot)


def test_unknown_term_is_refused(go1_policy: Path) -> None:
    meta = load_metadata(go1_policy.with_suffix(".json"))
    terms = (TermSpec(name="lidar", start=0, size=3, scale=(1.0,)), *meta.obs.terms[1:])
    with pytest.raises(MetadataError, match="'lidar' is not one this runtime can compute"):
        ObservationBuilder(with_obs(meta, terms=terms), 12)


def test_robot_config_errors_name_the_field() -> None:
    base = {"name": "x", "joint_names": ["a", "b"], "control_dt": 0.02, "joint_lower": [-1, -1],
            "joint_upper": [1, 1], "velocity_limit": 10, "max_target_delta": 0.5}
    assert robot_config_from_dict(base).velocity_limit == (10.0, 10.0)
    with pytest.raises(RobotConfigError, match="unknown keys \\['kpp'\\]"):
        robot_config_from_dict({**base, "kpp": [1, 1]})
    with pytest.raises(RobotConfigError, match="'joint_upper' has 1 values for 2 joints"):
        robot_config_from_dict({**base, "joint_upper": [1]})
    with pytest.raises(RobotConfigError, match="joint 'b' has lower limit"):
        robot_config_from_dict({**base, "joint_lower": [-1, 2]})


def test_projected_gravity() -> None:
    assert np.allclose(projected_gravity(np.array([1.0, 0, 0, 0])), [0, 0, -1])
    # Pitched nose-down by 90 deg about y: gravity points along body +x... rotate (0,0,-1) by R^T.
    q = np.array([np.cos(np.pi / 4), 0, np.sin(np.pi / 4), 0])
    assert np.allclose(projected_gravity(q), [1, 0, 0], atol=1e-12)


def test_observation_scales_offsets_and_history(go1_policy: Path) -> None:
    meta = load_metadata(go1_policy.with_suffix(".json"))
    meta = with_obs(meta, history_length=3, shape=(45 * 3,))
    b = ObservationBuilder(meta, 12)
    default = np.asarray(meta.action.default_pos)
    s = _state(default + 0.1)
    s.gyro[:] = [4.0, 0, 0]
    o1 = b.build(s, np.array([0.5, 0, 0]), np.zeros(12))[0].copy()
    frame = o1[:45]
    assert np.allclose(o1, np.tile(frame, 3))  # first frame fills the history
    assert np.isclose(frame[0], 4.0 * 0.25)  # gyro scale
    assert np.isclose(frame[6], 0.5 * 2.0)  # command scale
    assert np.allclose(frame[9:21], 0.1)  # joint_pos relative to default
    s.gyro[:] = [8.0, 0, 0]
    o2 = b.build(s, np.zeros(3), np.ones(12))[0]
    assert np.allclose(o2[:90], o1[45:])  # oldest first: the window moved by one frame
    assert np.isclose(o2[90], 2.0) and np.allclose(o2[-12:], 1.0)


def test_action_scale_offset_and_ramp(go1_policy: Path, robot: RobotConfig) -> None:
    r = PolicyRunner(go1_policy, robot, RunnerConfig(ramp_s=0.1))  # 5 steps at 50 Hz
    meta = r.meta
    start = np.asarray(meta.action.default_pos) + 0.2
    r.reset(start)
    action = np.full(12, 2.0)
    want = np.asarray(meta.action.offset) + np.asarray(meta.action.scale) * 2.0
    seen = [r.accept(action) for _ in range(6)]
    assert np.allclose(seen[0], start + 0.2 * (want - start))
    assert np.allclose(seen[4], want) and np.allclose(seen[5], want)
    assert not r.ramping
    r.accept(np.full(12, 50.0))  # clipped to action_clip like the training env
    assert np.allclose(r.last_action, 10.0)


def test_chunking_policy_runs_with_its_history_on_the_robot_side(robot: RobotConfig, tmp_path: Path) -> None:
    """An action-chunking export (BC base, or base + residual) runs through the same runner: the runner feeds
    the graph its past chunks, matching the torch graph stepped with the same history."""
    import torch
    from s2r.policies.bc import BCConfig, ChunkedBC, ChunkedPolicyGraph, export_chunked
    from s2r.real.chunking import ChunkHistory
    from s2r.sim import make
    from s2r.sim.env import sample_obs

    env = make("Go1-Velocity-Flat", 2, seed=0)
    try:
        torch.manual_seed(0)
        model = ChunkedBC(env.obs_dims["policy"], env.spec.action_dim, BCConfig(chunk=3, hidden=(32,)))
        graph = ChunkedPolicyGraph(model, 0.1).eval()
        export_chunked(graph, env.spec, "Go1-Velocity-Flat", tmp_path, sample_obs(env, 2, seed=0)["policy"])
    finally:
        env.close()
    r = PolicyRunner(tmp_path / "policy.onnx", robot)
    r.reset(np.zeros(12))
    hist = ChunkHistory(1, 3, 12)
    rng = np.random.default_rng(0)
    for _ in range(4):
        got = r.infer(_state(rng.normal(0, 0.1, 12)), np.array([0.5, 0.0, 0.0]))
        x = torch.from_numpy(r.builder.current_input.reshape(1, -1).astype(np.float32))
        with torch.no_grad():
            f = hist.feed()
            want, chunk = graph(x, torch.from_numpy(f["past_chunks"]), torch.from_numpy(f["past_mask"]))
        hist.push(chunk.numpy())
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
        r.accept(got)
    assert r.chunks is not None and r.chunks.mask.all()
    r.reset(np.zeros(12))
    assert not r.chunks.mask.any()
