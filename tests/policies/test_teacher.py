"""The privileged teacher: trains through the driver, exports teacher.pt (no ONNX), warm-starts from a PPO export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from s2r.policies.algorithm import AlgorithmTaskMismatch
from s2r.policies.driver import Budget, new_run_spec, train
from s2r.policies.export import export_policy
from s2r.policies.networks import ActorCritic, ActorCriticConfig
from s2r.policies.teacher import PrivilegedEncoderConfig, TeacherModel, load_teacher, warm_start_from_onnx
from s2r.sim import make
from s2r.sim.env import sample_obs

TASK = "Go1-Velocity-Flat"


@pytest.mark.slow  # the driver's first run in a process imports TensorBoard, dynamo and matplotlib: ~40 s under load
def test_teacher_run_writes_teacher_pt_and_no_onnx(tmp_path: Path) -> None:
    spec = new_run_spec("ppo-teacher", TASK, num_envs=8, seed=0, budget=Budget(steps=8 * 24 * 2),
                        algo_overrides={"encoder.latent_dim": 5, "algo.policy.actor_hidden": (32,)})
    res = train(spec, tmp_path / "t", progress=False)
    assert not (tmp_path / "t" / "policy.onnx").exists() and "skipped" in res["export"]["onnx"]
    t = load_teacher(tmp_path / "t")
    assert t.groups["policy"] == {"width": 45, "frame": 45, "history": 1}
    assert t.groups["privileged"]["width"] == 12 and t.model.enc_cfg.latent_dim == 5
    obs = {"policy": torch.zeros(3, 45), "privileged": torch.zeros(3, 12)}
    assert t.model.act_mean(t.actor_input(obs)).shape == (3, 12)


@pytest.fixture(scope="module")
def ppo_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """A PPO actor with real normaliser statistics and full-size actions, exported through s2r.policies.export."""
    out = tmp_path_factory.mktemp("ppo")
    torch.manual_seed(0)
    env = make(TASK, 4, seed=1)
    try:
        obs = sample_obs(env, 6, seed=1)
        model = ActorCritic(env.obs_dims, 12, ActorCriticConfig(actor_hidden=(64, 32)))
        torch.nn.init.orthogonal_(model.actor[-1].weight, gain=1.0)
        x = torch.as_tensor(obs["policy"])
        model.update_normalizers(x, torch.as_tensor(np.concatenate([obs["policy"], obs["privileged"]], 1)))
        export_policy(model.eval(), env.spec, TASK, out, obs["policy"])
    finally:
        env.close()
    return out, obs


def test_warm_start_acts_as_the_exported_policy(ppo_export: tuple[Path, dict[str, np.ndarray]]) -> None:
    import onnxruntime as ort

    out, obs = ppo_export
    teacher = TeacherModel({"policy": 45, "privileged": 12}, 12, ActorCriticConfig(actor_hidden=(64, 32)),
                           PrivilegedEncoderConfig())
    warm_start_from_onnx(teacher, out)
    want = ort.InferenceSession(str(out / "policy.onnx")).run(None, {"obs": obs["policy"]})[0]
    with torch.no_grad():
        got = teacher.act_mean(torch.as_tensor(np.concatenate([obs["policy"], obs["privileged"]], 1))).numpy()
    assert np.abs(got - want).max() < 0.05 * np.abs(want).mean()
    # and the latent does reach the actions (gradients can flow to the encoder)
    assert teacher.actor[0].weight[:, 45:].abs().max() > 0


def test_warm_start_of_other_widths_is_one_sentence(ppo_export: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    out, _ = ppo_export
    teacher = TeacherModel({"policy": 45, "privileged": 12}, 12, ActorCriticConfig(actor_hidden=(128, 32)),
                           PrivilegedEncoderConfig())
    with pytest.raises(AlgorithmTaskMismatch, match=r"holds an actor with layers \[\(64, 45\), .* needs \[\(128, 45\)"):
        warm_start_from_onnx(teacher, out)
    with pytest.raises(AlgorithmTaskMismatch, match=r"init_from: no policy\.onnx at"):
        warm_start_from_onnx(teacher, tmp_path)
