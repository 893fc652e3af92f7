"""Privileged teacher -> history-based students (rma, dagger, hib): imitation, beta = 0, groups, ONNX parity.

The teacher is an untrained `TeacherModel` with a full-gain last layer (so its actions depend on both its
policy input and its privileged latent) and normalisation statistics from real Go1 observations: training
a walking teacher is a benchmark (bench/hib.py), imitating whatever the teacher does is what is tested here.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from s2r.policies.algorithm import AlgorithmTaskMismatch, RunContext
from s2r.policies.distill import DistillConfig, DistillTrainer
from s2r.policies.networks import ActorCriticConfig
from s2r.policies.rundir import RunDir
from s2r.policies.students import HIBModel, RMAStudent, hib_loss, latent_regression
from s2r.policies.teacher import PrivilegedEncoderConfig, TeacherModel, load_teacher, save_teacher
from s2r.sim import make, task_config
from s2r.sim.env import GroupSpec, sample_obs
from s2r.sim.tasks.locomotion import PRIVILEGED_TERMS

TASK = "Go1-Velocity-Flat"
HISTORY = 4


def _teacher(tmp: Path, privileged_terms: tuple = PRIVILEGED_TERMS) -> Path:
    """A teacher.pt for Go1 (policy history 1), its normaliser fed with real observations."""
    tmp.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    env = make(TASK, 8, cfg=task_config(TASK), seed=3)
    try:
        spec = env.spec
        obs = sample_obs(env, 10, seed=3)
    finally:
        env.close()
    if privileged_terms is not PRIVILEGED_TERMS:  # a teacher trained on a task with another privileged group
        spec = dataclasses.replace(spec, groups={**spec.groups, "privileged": GroupSpec(terms=privileged_terms)})
        obs["privileged"] = obs["privileged"][:, :spec.group_dim("privileged")]
    dims = {g: spec.group_dim(g) for g in ("policy", "privileged")}
    model = TeacherModel(dims, 12, ActorCriticConfig(actor_hidden=(64, 64), critic_hidden=(32,)),
                         PrivilegedEncoderConfig(hidden=(32,), latent_dim=4))
    torch.nn.init.orthogonal_(model.actor[-1].weight, gain=1.0)
    torch.nn.init.orthogonal_(model.encoder[-1].weight, gain=3.0)  # latents of order 1, so regression has work to do
    x = torch.as_tensor(np.concatenate([obs["policy"], obs["privileged"]], axis=1))
    model.update_normalizers(x, x)
    save_teacher(model, spec, TASK, tmp)
    return tmp


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _teacher(tmp_path_factory.mktemp("teacher"))


def _trainer(tmp: Path, teacher: Path, student: str, history: int = HISTORY, **kw) -> DistillTrainer:
    torch.manual_seed(0)
    tcfg = task_config(TASK, {"history_length": history, "randomization.observation_noise": 0.0})
    cfg = DistillConfig(student=student, teacher=str(teacher), num_envs=16, steps_per_env=16,
                        encoder_hidden=(64,), dagger_hidden=(128, 64), minibatches=2, export_parity_steps=4, **kw)
    return DistillTrainer(RunContext(task_id=TASK, task_cfg=tcfg, cfg=cfg, run=RunDir(tmp), progress=False))


def _train(tr: DistillTrainer, iterations: int) -> list[dict[str, float]]:
    try:
        return [tr.iterate() for _ in range(iterations)]
    finally:
        tr.close()


def test_rma_regresses_the_teacher_latent(tmp_path: Path, teacher_dir: Path) -> None:
    rows = _train(_trainer(tmp_path, teacher_dir, "rma", epochs=4), 6)
    first, last = rows[0]["loss"], np.mean([r["loss"] for r in rows[-2:]])
    assert last < 0.3 * first, f"rma latent MSE {first:.4f} -> {last:.4f}"
    assert rows[-1]["action_mse"] < 0.5 * rows[0]["action_mse"]


def test_dagger_imitates_the_teacher_actions(tmp_path: Path, teacher_dir: Path) -> None:
    rows = _train(_trainer(tmp_path, teacher_dir, "dagger", epochs=4), 6)
    # action_mse is measured while collecting, before that rollout's update: the untrained student first.
    untrained, trained = rows[0]["action_mse"], np.mean([r["action_mse"] for r in rows[-2:]])
    assert trained < 0.3 * untrained, f"dagger action MSE {untrained:.4f} -> {trained:.4f}"


@pytest.mark.slow  # ~4 s of PPO on a loaded machine; the default run keeps rma, dagger and beta = 0
def test_hib_regresses_the_latent_through_ppo(tmp_path: Path, teacher_dir: Path) -> None:
    tr = _trainer(tmp_path, teacher_dir, "hib", beta=1e-3,
                  hib_ppo=dataclasses.replace(DistillConfig().hib_ppo, learning_rate=1e-3, epochs=4, minibatches=2))
    untrained = copy.deepcopy(tr.model)
    rows = _train(tr, 6)
    # The last rollout's histories (still in the PPO storage): latent error of the untrained and the trained encoder.
    x = tr.alg.storage.actor_obs.flatten(0, 1)
    with torch.no_grad():
        target = tr.teacher.model.latent_from_privileged(tr.model.privileged(tr.alg.storage.critic_obs.flatten(0, 1)))
        before = latent_regression(untrained.encode(x)[0], target).item()
        after = latent_regression(tr.model.encode(x)[0], target).item()
    assert after < 0.5 * before, f"hib latent MSE {before:.4f} -> {after:.4f}"
    assert np.isfinite(rows[-1]["latent_kl"]) and rows[-1]["latent_kl"] > 0 and np.isfinite(rows[-1]["kl"])


def test_hib_actor_lr_scale_sets_how_far_ppo_moves_the_actor_head(tmp_path: Path, teacher_dir: Path) -> None:
    """Scale 0: one HIB iteration moves the encoder but leaves the teacher's head; scale 1 moves both."""
    moved = {}
    for scale in (0.0, 1.0):
        tr = _trainer(tmp_path / str(scale), teacher_dir, "hib", hib_actor_lr_scale=scale)
        head = [p.detach().clone() for p in (*tr.model.base.actor.parameters(), tr.model.base.log_std)]
        enc = [p.detach().clone() for p in tr.model.encoder.parameters()]
        assert [g["lr"] for g in tr.alg.optimizer.param_groups] == pytest.approx([3e-4, 3e-4 * scale])
        _train(tr, 1)
        now_head = [p.detach() for p in (*tr.model.base.actor.parameters(), tr.model.base.log_std)]
        now_enc = [p.detach() for p in tr.model.encoder.parameters()]
        moved[scale] = (max(float((a - b).abs().max()) for a, b in zip(head, now_head, strict=True)),
                        max(float((a - b).abs().max()) for a, b in zip(enc, now_enc, strict=True)))
    assert moved[0.0][0] == 0.0 and moved[0.0][1] > 1e-5, moved
    assert moved[1.0][0] > 1e-5 and moved[1.0][1] > 1e-5, moved
    with pytest.raises(ValueError, match="hib_actor_lr_scale must be in"):
        DistillConfig(student="hib", hib_actor_lr_scale=2.0)


def test_beta_zero_is_the_rma_regression(teacher_dir: Path) -> None:
    """Same encoder weights, same batch: HIB's loss at beta = 0 and RMA's have the same value and gradients."""
    t = load_teacher(teacher_dir)
    torch.manual_seed(1)
    rma = RMAStudent(t.model, 45, HISTORY, (64,))
    hib = HIBModel(t, 45, HISTORY, (64,))
    hib.encoder.load_state_dict(rma.encoder.state_dict())
    x = torch.randn(32, 45 * HISTORY)
    target = torch.randn(32, 4)
    want = latent_regression(rma.latent(x), target)
    want.backward()
    mu, log_sigma = hib.encode(x)
    got, _ = hib_loss(mu, log_sigma, target, beta=0.0)
    got.backward()
    assert torch.equal(got, want)
    for a, b in zip(rma.encoder.parameters(), hib.encoder.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad)
    assert hib.log_sigma.grad is None  # the bottleneck is out of the objective, not weighted by zero
    more, _ = hib_loss(mu.detach(), log_sigma, target, beta=0.1)
    assert more > got  # and beta > 0 does add the KL


def test_teacher_group_mismatch_is_one_sentence(tmp_path: Path) -> None:
    other = _teacher(tmp_path / "t8", PRIVILEGED_TERMS[:-1])  # 8 privileged values instead of 12
    with pytest.raises(AlgorithmTaskMismatch) as err:
        _trainer(tmp_path / "run", other, "rma")
    msg = str(err.value)
    assert "observation group 'privileged' has 12 values per frame" in msg and "trained on 8" in msg, msg
    assert msg.count(". ") == 0 and "\n" not in msg


def test_missing_history_and_teacher_are_refused(tmp_path: Path, teacher_dir: Path) -> None:
    with pytest.raises(AlgorithmTaskMismatch, match="history_length"):
        _trainer(tmp_path, teacher_dir, "rma", history=1)
    with pytest.raises(AlgorithmTaskMismatch, match=r"no teacher\.pt at .*--algo ppo-teacher"):
        _trainer(tmp_path, tmp_path / "nowhere", "rma")
    with pytest.raises(ValueError, match="student 'hb' is unknown"):
        DistillConfig(student="hb")


@pytest.mark.parametrize("student", ["hib", pytest.param("rma", marks=pytest.mark.slow)])
def test_exported_student_matches_torch_through_the_robot_runner(tmp_path: Path, teacher_dir: Path, student: str) -> None:
    """The student's ONNX file in the robot-side runner, fed by the sim bridge's IMU and encoders, acts as the
    torch student on the env's stacked history, step by step (a reversed history order would not)."""
    from s2r.real.observation import RobotState
    from s2r.real.robot import load_robot_config
    from s2r.real.runner import PolicyRunner
    from s2r.sim.robot_sim import RobotSim

    from tests.policy_files import GO1_ROBOT

    tr = _trainer(tmp_path, teacher_dir, student)
    try:
        tr.iterate()  # a trained-a-little student, not the initial weights
        tr.export()
    finally:
        tr.close()
    assert json_history(tmp_path) == HISTORY
    model = tr.model.eval()
    env = make(TASK, 2, cfg=tr.ctx.task_cfg, seed=5)
    sim = RobotSim(task_cfg=tr.ctx.task_cfg)
    runners = [PolicyRunner(tmp_path / "policy.onnx", load_robot_config(GO1_ROBOT)) for _ in range(2)]
    try:
        obs = env.reset(seed=5)
        worst, moved = 0.0, 0.0
        for _ in range(30):
            acts = []
            for i, r in enumerate(runners):
                sim.set_state(env.backend.state[i])
                q, qd = sim.joint_state()
                quat, gyro, _ = sim.imu()
                acts.append(r.infer(RobotState(q, qd, quat, gyro), env.command[i])[0])
            acts = np.stack(acts)
            with torch.no_grad():
                want = model.act_mean(torch.as_tensor(obs["policy"])).numpy()
            worst = max(worst, float(np.abs(acts - want).max()))
            moved = max(moved, float(np.abs(obs["policy"][:, :45] - obs["policy"][:, -45:]).max()))
            obs, _, _, _, info = env.step(acts)
            for i, r in enumerate(runners):
                r.accept(acts[i])
            for i in info.get("episode", {}).get("env_ids", []):
                runners[i].reset(env.backend.qpos[i, 7:])
        assert moved > 0.1  # the history did change over the rollout, so its order mattered
        assert worst < 1e-4, f"robot runner and torch student differ by {worst}"
    finally:
        env.close()


def json_history(run: Path) -> int:
    import json

    return int(json.loads((run / "policy.json").read_text())["observation"][0]["history_length"])
