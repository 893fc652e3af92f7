"""HIL with a learned classifier as the only reward: the simulator's success ends nothing, the classifier's call
rewards and ends episodes (demos relabelled too), and its false positives are counted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from s2r.policies.algorithm import AlgorithmTaskMismatch
from s2r.policies.driver import Budget, new_run_spec, train
from s2r.policies.hil import INTERVENED, PROPOSED
from s2r.policies.replay import ReplayBuffer
from s2r.policies.reward_classifier import ClassifierConfig, export_classifier, train_classifier
from s2r.real.episodes import read_episodes
from s2r.real.reward_labels import LabelRecorder, load_labels
from s2r.sim import make, task_config
from s2r.sim.tasks.experts import make_expert

TASK = "Panda-PickPlace-Cube"
TINY = {"num_demos": 2, "learning_starts": 60, "eval_episodes": 1, "eval_every": 10**6, "steps_per_iteration": 20,
        "learner.batch_size": 32, "learner.actor_hidden": (32,), "learner.critic_hidden": (32,), "torch_threads": 1,
        "buffer_capacity": 2000}


def _obs_dim() -> int:
    env = make(TASK, 1)
    try:
        return env.obs_dims["policy"]
    finally:
        env.close()


def state_classifier(tmp_path: Path, threshold: float, task: str = TASK) -> Path:
    """A real exported state classifier (trained a few steps on noise) whose threshold is then set by hand:
    0 calls every frame a success, 2 none, so what the HIL loop does with its calls is known exactly."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    dim = _obs_dim()
    rec = LabelRecorder(task, state_dim=dim, source="test")
    for e in range(12):
        for t in range(4):
            rec.add(label=e % 2 == 0 and t == 3, state=rng.normal(size=dim).astype(np.float32))
        rec.end_episode(e % 2 == 0)
    labels = load_labels(rec.save(tmp_path / "labels.npz"))
    trained = train_classifier(labels, ClassifierConfig(inputs="state", steps=5, batch_size=8, hard_after=100))
    path = export_classifier(trained, tmp_path / "clf.onnx")
    meta_path = tmp_path / "clf.onnx.json"
    meta = json.loads(meta_path.read_text())
    meta["threshold"] = threshold
    meta_path.write_text(json.dumps(meta))
    return path


def _online(run: Path, n_envs: int) -> ReplayBuffer:
    dims = {"policy": _obs_dim(), PROPOSED: 4, INTERVENED: 1}
    return ReplayBuffer(dims, 4, 100_000, num_envs=n_envs, directory=run / "replay")


def test_success_ends_no_episode_when_told_and_end_episodes_restarts_one() -> None:
    cfg = task_config(TASK, {"success_ends_episode": False})
    env = make(TASK, 2, cfg=cfg, seed=3)
    try:
        expert = make_expert(TASK, 2, cfg=cfg, seed=3)
        obs = env.reset(seed=3)
        expert.reset()
        first = {k: v.copy() for k, v in obs.items()}
        hit = None
        for _ in range(cfg.max_episode_steps - 1):
            obs, _, term, trunc, info = env.step(expert.act(obs))
            if info["success"].any():
                hit = info
                break
        assert hit is not None, "the scripted expert reached no success"
        i = int(np.flatnonzero(hit["success"])[0])
        assert not term[i] and not trunc[i] and "episode" not in hit  # success, and the episode runs on
        fresh = env.end_episodes([i])
        assert set(fresh) == set(obs) and fresh["policy"].shape == (1, env.obs_dims["policy"])
        assert fresh["policy"].dtype == np.float32
        assert not np.allclose(fresh["policy"][0], obs["policy"][i])  # a new start, not where the cube was placed
        assert np.abs(fresh["policy"][0] - first["policy"][i]).max() < 0.5  # a start pose like the first one
        assert env.episode_step[i] == 0 and env.episode_step[1 - i] > 0
    finally:
        env.close()


def test_a_classifier_that_always_fires_rewards_and_ends_every_step_and_counts_false_positives(tmp_path) -> None:
    clf = state_classifier(tmp_path, threshold=0.0)
    run = tmp_path / "run"
    res = train(new_run_spec("hil", TASK, algo_overrides={**TINY, "classifier": str(clf)}, num_envs=2,
                             budget=Budget(steps=80)), run, progress=False)
    # Every step is a classifier success: each one ends its episode, none of them a simulator success.
    assert res["classifier_ends"] == res["episodes_ended"] == 80
    assert res["false_positive_ends"] == 80 and res["false_positive_end_rate"] == 1.0
    assert res["train_success"] == 0.0
    online = _online(run, 2)
    try:
        n = len(online)
        assert n == 80 and np.all(online._reward[:n] == 1.0) and online._terminated[:n].all()
    finally:
        online.close()
    # The demos were relabelled by the same classifier: reward 1 on the first step, which ends them.
    demo = ReplayBuffer({"policy": _obs_dim(), PROPOSED: 4, INTERVENED: 1}, 4, 100_000, num_envs=1,
                        directory=run / "interventions")
    try:
        first = demo._terminated[: len(demo)]
        assert first[:2].all() and np.all(demo._reward[:2] == 1.0)
    finally:
        demo.close()


def test_a_classifier_that_never_fires_leaves_every_reward_zero(tmp_path) -> None:
    clf = state_classifier(tmp_path, threshold=2.0)
    run = tmp_path / "run"
    res = train(new_run_spec("hil", TASK, algo_overrides={**TINY, "classifier": str(clf)}, num_envs=2,
                             budget=Budget(steps=100)), run, progress=False)
    assert res["classifier_ends"] == 0 and res["false_positive_ends"] == 0
    online = _online(run, 2)
    try:
        assert len(online) == 100 and not online._reward[:100].any()
    finally:
        online.close()
    demo = ReplayBuffer({"policy": _obs_dim(), PROPOSED: 4, INTERVENED: 1}, 4, 100_000, num_envs=1,
                        directory=run / "interventions")
    _, eps = read_episodes(run / "demos")
    try:
        n = sum(len(e.actions) for e in eps)  # the demos come first in the demo buffer, operator steps after
        # Expert demos that succeeded in the simulator keep every frame but earn nothing and end as time-outs.
        assert any(e.success for e in eps) and not demo._reward[:n].any() and not demo._terminated[:n].any()
    finally:
        demo.close()


def test_bad_classifier_settings_are_refused(tmp_path) -> None:
    clf = state_classifier(tmp_path, threshold=0.5, task="Panda-Lift-Cube")
    with pytest.raises(AlgorithmTaskMismatch, match="trained for task Panda-Lift-Cube, not Panda-PickPlace-Cube"):
        train(new_run_spec("hil", TASK, algo_overrides={**TINY, "classifier": str(clf)}, budget=Budget(steps=10)),
              tmp_path / "r1", progress=False)
    with pytest.raises(ValueError, match=r"hil takes one reward: classifier= .* or rlif=true"):
        new_run_spec("hil", TASK, algo_overrides={"classifier": str(clf), "rlif": True})
    with pytest.raises(ValueError, match="give the classifier to `s2r hil actor --classifier`"):
        new_run_spec("hil", TASK, algo_overrides={"classifier": str(clf), "link": "127.0.0.1:0"})
    with pytest.raises(AlgorithmTaskMismatch, match=r"is missing; train one with `s2r hil classifier`"):
        train(new_run_spec("hil", TASK, algo_overrides={**TINY, "classifier": str(tmp_path / "none.onnx")},
                           budget=Budget(steps=10)), tmp_path / "r2", progress=False)


def test_labels_after_success_hold_several_success_frames_per_episode(tmp_path) -> None:
    from s2r.policies.reward_classifier import collect_sim_labels

    rec = collect_sim_labels(TASK, 4, image_size=None, num_envs=2, failure_rate=0.0, noise=0.0, seed=1, after_success=4)
    labels = load_labels(rec.save(tmp_path / "labels.npz"))
    pos = labels.label == 1
    per_episode = np.bincount(labels.episode[pos])
    assert per_episode.max() > 1  # several success frames in an episode, not only its first
    assert per_episode.max() <= 5  # the first success frame and at most `after_success` more, then it ends
    assert labels.episode_success[pos].all()  # success frames only in episodes that succeeded
