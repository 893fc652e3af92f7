"""HIL-SERL in simulation: operator steps reach both buffers with their flags, RLIF labels, RLPD baseline."""

from __future__ import annotations

import numpy as np
import pytest
from s2r.policies.algorithm import AlgorithmTaskMismatch
from s2r.policies.driver import Budget, new_run_spec, train
from s2r.policies.hil import INTERVENED, PROPOSED
from s2r.policies.replay import ReplayBuffer
from s2r.real.episodes import read_episodes

TASK = "Panda-Lift-Cube"
TINY = {"num_demos": 4, "learning_starts": 100, "eval_episodes": 4, "eval_every": 10**6, "steps_per_iteration": 20,
        "learner.batch_size": 64, "learner.actor_hidden": (64, 64), "learner.critic_hidden": (64, 64),
        "torch_threads": 1, "operator_cfg.noise": 0.0}


def _buffers(run, n_envs: int, a_dim: int = 4, obs_dim: int | None = None) -> tuple[ReplayBuffer, ReplayBuffer]:
    dims = {"policy": obs_dim, PROPOSED: a_dim, INTERVENED: 1}
    online = ReplayBuffer(dims, a_dim, 100_000, num_envs=n_envs, directory=run / "replay")
    demo = ReplayBuffer(dims, a_dim, 100_000, num_envs=1, directory=run / "interventions")
    return online, demo


def _obs_dim() -> int:
    from s2r.sim import make

    env = make(TASK, 1)
    try:
        return env.obs_dims["policy"]
    finally:
        env.close()


def test_interventions_reach_both_buffers_with_their_flags(tmp_path) -> None:
    run = tmp_path / "run"
    res = train(new_run_spec("hil", TASK, algo_overrides=TINY, num_envs=2, budget=Budget(steps=400)), run, progress=False)
    assert res["progress"] == 400 and (run / "policy.onnx").is_file()
    assert res["export"]["max_abs_diff"] < 1e-4
    _, demos = read_episodes(run / "demos")
    demo_steps = sum(len(e.actions) for e in demos)
    online, demo = _buffers(run, 2, obs_dim=_obs_dim())
    try:
        assert len(online) == 400
        flags = online._obs[INTERVENED][:400, 0]
        assert 0 < flags.sum() < 400  # an untrained policy strays; the operator takes over some of the time
        # Every operator step is in the demo buffer too (after the demos), exactly once.
        assert len(demo) == demo_steps + int(flags.sum())
        assert demo._obs[INTERVENED][: len(demo), 0].all()
        # Where the operator drove, the executed action is the operator's, not the policy's proposal.
        mask = flags > 0
        assert not np.allclose(online._action[:400][mask], online._obs[PROPOSED][:400][mask])
        assert np.allclose(online._action[:400][~mask], online._obs[PROPOSED][:400][~mask])
        assert res["intervention_rate"] == pytest.approx(flags[-400:].mean(), abs=0.2)
    finally:
        online.close()
        demo.close()


def test_rlpd_baseline_has_no_operator(tmp_path) -> None:
    run = tmp_path / "run"
    train(new_run_spec("hil", TASK, algo_overrides={**TINY, "operator": False}, num_envs=2, budget=Budget(steps=200)),
          run, progress=False)
    online, demo = _buffers(run, 2, obs_dim=_obs_dim())
    try:
        assert online._obs[INTERVENED][:200].sum() == 0
        _, demos = read_episodes(run / "demos")
        assert len(demo) == sum(len(e.actions) for e in demos)
    finally:
        online.close()
        demo.close()


def test_rlif_rewards_the_step_before_each_takeover(tmp_path) -> None:
    run = tmp_path / "run"
    train(new_run_spec("hil", TASK, algo_overrides={**TINY, "rlif": True}, num_envs=1, budget=Budget(steps=300)), run,
          progress=False)
    online, demo = _buffers(run, 1, obs_dim=_obs_dim())
    try:
        n = len(online)
        flags = online._obs[INTERVENED][:n, 0] > 0
        rew = online._reward[:n]
        done = online._done[:n]
        starts = np.flatnonzero(flags[1:] & ~flags[:-1] & ~done[:-1]) + 1
        assert len(starts) > 0
        assert set(np.flatnonzero(rew < 0)) == set(starts - 1)  # -1 exactly on the policy step before a takeover
        assert np.all(rew[rew != 0] == -1.0)
    finally:
        online.close()
        demo.close()


def test_task_without_an_operator_is_refused(tmp_path) -> None:
    with pytest.raises(AlgorithmTaskMismatch, match="no scripted expert"):
        train(new_run_spec("hil", "Puck-Velocity-Flat", algo_overrides={"torch_threads": 1}, budget=Budget(steps=10)),
              tmp_path / "run", progress=False)


def test_exposed_learner_without_a_token_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("S2R_HIL_TOKEN", raising=False)
    with pytest.raises(ValueError, match=r"without a token: set \$S2R_HIL_TOKEN"):
        train(new_run_spec("hil", TASK, algo_overrides={"link": "0.0.0.0:0"}, budget=Budget(steps=10)), tmp_path / "r",
              progress=False)
