"""SAC and TD3 as registered algorithms (s2r.policies.sac) on gymnasium envs and on our tasks, through the run driver."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from s2r.policies.algorithm import AlgorithmTaskMismatch, get_algorithm
from s2r.policies.driver import Budget, CheckpointError, RunDriver, new_run_spec, resume_run_spec, train
from s2r.policies.replay import ReplayBuffer, record_dtype
from s2r.policies.sac import SAC, TD3, SACConfig, TD3Config
from s2r.sim import make
from s2r.sim.registry import UnknownTaskError

from tests.training_runs import REPO, cli_env

# Small networks and batches: these tests check the plumbing; the learning test below checks the learning.
TINY = {"torch_threads": 1, "learning_starts": 100, "steps_per_iteration": 50, "eval_episodes": 2,
        "learner.batch_size": 64, "learner.actor_hidden": (32, 32), "learner.critic_hidden": (32, 32)}


def box_mapping(policy_json: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) of a `box` action as a plain client reads them from policy.json (schema 2)."""
    action = policy_json["action"]
    assert policy_json["schema_version"] == 2 and action["kind"] == "box", action
    return np.asarray(action["scale"], np.float64), np.asarray(action["offset"], np.float64)


def test_registered_with_the_right_actor_kind() -> None:
    assert get_algorithm("sac") is SAC and get_algorithm("td3") is TD3
    assert SACConfig().learner.actor == "stochastic" and TD3Config().learner.actor == "deterministic"
    assert TD3Config().learner.policy_delay == 2
    assert SAC.durable_replay and TD3.durable_replay


def test_sac_on_gym_pendulum_writes_a_run_a_plain_client_can_drive(tmp_path: Path) -> None:
    import onnxruntime as ort

    run = tmp_path / "run"
    res = train(new_run_spec("sac", "gym:Pendulum-v1", algo_overrides=TINY, num_envs=2, budget=Budget(steps=400)), run,
                progress=False)
    for name in ("checkpoint.pt", "history.json", "policy.onnx", "policy.json", "learning_curve.png", "config.json"):
        assert (run / name).is_file(), name
    assert res["progress"] == 400 and not res["interrupted"]
    assert res["export"]["max_abs_diff"] < 1e-5
    rows = json.loads((run / "history.json").read_text())
    learned = [r for r in rows if "critic_loss" in r]
    assert learned and all(math.isfinite(r[k]) for r in learned for k in ("critic_loss", "actor_loss", "alpha", "q_mean"))
    # One update per transition from the step that fills the first 100 (two envs: 400 - 100 + 2).
    assert learned[-1]["updates"] == 302
    assert learned[-1]["episodes"] == 2 and math.isfinite(learned[-1]["mean_return"])
    assert "eval_return" in rows[-1]  # the final evaluation is logged too
    assert math.isfinite(res["eval_return"])

    # A plain onnxruntime client on gymnasium's own Pendulum, mapping outputs as policy.json says.
    meta = json.loads((run / "policy.json").read_text())
    scale, offset = box_mapping(meta)
    np.testing.assert_allclose(scale, [2.0])  # Pendulum: torque in [-2, 2]
    np.testing.assert_allclose(offset, [0.0])
    sess = ort.InferenceSession(str(run / "policy.onnx"), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=3)
    client_return, outputs = 0.0, []
    for _ in range(200):
        out = sess.run(None, {inp: obs[None].astype(np.float32)})[0][0]
        outputs.append(out)
        torque = offset + scale * out
        assert env.action_space.contains(torque.astype(np.float32))
        obs, r, term, trunc, _ = env.step(torque.astype(np.float32))
        client_return += float(r)
        if term or trunc:
            break
    assert np.all(np.abs(outputs) <= 1.0)
    # The same file through our adapter gives the same episode: the client's mapping is the adapter's.
    ours = make("gym:Pendulum-v1", 1, seed=3)
    o = ours.reset(seed=3)
    while True:
        o, _, _, _, info = ours.step(sess.run(None, {inp: o["policy"]})[0])
        if "episode" in info:
            break
    assert info["episode"]["return"][0] == pytest.approx(client_return, rel=1e-4)


def test_td3_trains_on_our_puck_task(tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = train(new_run_spec("td3", "Puck-Velocity-Flat", algo_overrides={**TINY, "learner.critic_obs": ("policy", "privileged")},
                             num_envs=4, budget=Budget(steps=400)), run, progress=False)
    assert res["progress"] == 400 and res["export"]["max_abs_diff"] < 1e-5
    assert math.isfinite(res["critic_loss"]) and math.isfinite(res["eval_return"])
    assert res["updates"] == 400 - 100 + 4
    meta = json.loads((run / "policy.json").read_text())
    assert meta["task_id"] == "Puck-Velocity-Flat"


_KILLED_RUN = """
import sys
from s2r.policies.driver import Budget, new_run_spec, train
spec = new_run_spec("sac", "gym:Pendulum-v1", algo_overrides={tiny!r}, num_envs=2, budget=Budget(steps=10**7),
                    checkpoint_minutes=60.0)
train(spec, sys.argv[1], progress=False)
"""


def _transitions_on_disk(replay: Path, obs_dims: dict[str, int], action_dim: int, num_envs: int) -> int:
    size = record_dtype(obs_dims, action_dim, num_envs).itemsize
    return sum(f.stat().st_size // size for f in replay.glob("chunk_*.bin")) * num_envs


def test_sigkill_before_the_first_checkpoint_resumes_with_every_transition(tmp_path: Path) -> None:
    run = tmp_path / "run"
    tiny = {**TINY, "steps_per_iteration": 10}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN.format(tiny=tiny), str(run)], cwd=REPO, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while _transitions_on_disk(run / "replay", {"policy": 3}, 1, 2) < 300:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run wrote no transitions in 90 s"
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert not (run / "checkpoint.pt").exists()
    on_disk = _transitions_on_disk(run / "replay", {"policy": 3}, 1, 2)

    spec = resume_run_spec(run, budget=Budget(steps=on_disk + 200))
    driver = RunDriver(spec, run, resume=True, progress=False)
    try:
        assert len(driver.algo.buffer) == on_disk  # each transition on disk, once
        assert driver.algo.progress == on_disk
        assert f"with {on_disk:,} transitions already on disk" in driver.resumed_from
        res = driver.learn()
    finally:
        driver.close()
    assert res["progress"] >= on_disk + 200 and math.isfinite(res["critic_loss"]) and res["updates"] > 0
    with ReplayBuffer({"policy": 3}, 1, 10_000, num_envs=2, directory=run / "replay") as buf:
        assert len(buf) == res["progress"] == _transitions_on_disk(run / "replay", {"policy": 3}, 1, 2)
    assert (run / "checkpoint.pt").is_file() and (run / "policy.onnx").is_file()


def test_new_run_into_a_folder_with_transitions_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with ReplayBuffer({"policy": 3}, 1, 100, num_envs=1, directory=run / "replay") as buf:
        buf.add({"policy": np.zeros((1, 3))}, np.zeros((1, 1)), np.zeros(1), {"policy": np.zeros((1, 3))},
                np.zeros(1, bool), np.zeros(1, bool))
    with pytest.raises(CheckpointError, match=r"already holds transitions of a run .* resume it or choose another folder"):
        RunDriver(new_run_spec("sac", "gym:Pendulum-v1", algo_overrides=TINY), run, progress=False)


def test_discrete_gym_env_is_refused_before_a_folder_is_made(tmp_path: Path) -> None:
    with pytest.raises(AlgorithmTaskMismatch) as err:
        train(new_run_spec("sac", "gym:CartPole-v1", algo_overrides=TINY), tmp_path / "run", progress=False)
    assert "Discrete action space" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


def test_unknown_gym_id_is_refused() -> None:
    with pytest.raises(UnknownTaskError, match=r"unknown gymnasium environment 'gym:Pendulm-v1'.*Did you mean"):
        new_run_spec("sac", "gym:Pendulm-v1")


def test_image_group_is_refused(tmp_path: Path) -> None:
    spec = new_run_spec("sac", "Panda-Lift-Cube", task_overrides={"image": True},
                        algo_overrides={**TINY, "learner.critic_obs": "policy,image"})
    with pytest.raises(AlgorithmTaskMismatch, match=r"reads observation group 'image' .* holds images") as err:
        RunDriver(spec, tmp_path / "run", progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("overrides", "words"), [
    ({"learner.critic_obs": "policy,privileged"}, "has no observation group 'privileged' (it has policy)"),
    ({"learner.actor_obs": "obs"}, "has no observation group 'obs'"),
])
def test_groups_the_task_lacks_are_named(tmp_path: Path, overrides: dict[str, Any], words: str) -> None:
    spec = new_run_spec("td3", "gym:Pendulum-v1", algo_overrides={**TINY, **overrides})
    with pytest.raises(AlgorithmTaskMismatch) as err:
        RunDriver(spec, tmp_path / "run", progress=False)
    assert words in str(err.value)


def test_actor_reading_more_than_policy_is_refused(tmp_path: Path) -> None:
    spec = new_run_spec("sac", "Puck-Velocity-Flat", algo_overrides={**TINY, "learner.actor_obs": "policy,privileged"})
    with pytest.raises(AlgorithmTaskMismatch, match="actor must read the 'policy' group alone"):
        RunDriver(spec, tmp_path / "run", progress=False)


class _NoActionEnv(gym.Env):
    """A gymnasium env with an empty action box (nothing to control)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (0,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(2, np.float32), 0.0, False, False, {}


def test_task_without_actions_is_refused(tmp_path: Path) -> None:
    if "s2rtest/NoAction-v0" not in gym.registry:
        gym.register(id="s2rtest/NoAction-v0", entry_point=_NoActionEnv, max_episode_steps=10)
    spec = new_run_spec("sac", "gym:s2rtest/NoAction-v0", algo_overrides=TINY)
    with pytest.raises(AlgorithmTaskMismatch, match="has no action to learn"):
        RunDriver(spec, tmp_path / "run", progress=False)


@pytest.mark.slow
def test_sac_learns_pendulum(tmp_path: Path) -> None:
    """3,000 env steps take gymnasium's Pendulum from a constant push to swinging up and holding (about 40 s)."""
    fast = {"torch_threads": 1, "learning_starts": 250, "eval_episodes": 10, "learner.actor_hidden": (64, 64),
            "learner.critic_hidden": (64, 64), "learner.actor_lr": 1e-3, "learner.critic_lr": 1e-3,
            "learner.alpha_lr": 1e-3}
    spec = new_run_spec("sac", "gym:Pendulum-v1", algo_overrides=fast, seed=0, budget=Budget(steps=3000))
    driver = RunDriver(spec, tmp_path / "run", progress=False)
    try:
        untrained = driver.algo.evaluate()["eval_return"]
        res = driver.learn()
    finally:
        driver.close()
    # Random play scores about -1200 and a good swing-up about -150 (returns are costs, over 200 steps).
    assert untrained < -900
    assert res["eval_return"] > -400 and res["eval_return"] > untrained + 600, (untrained, res["eval_return"])
