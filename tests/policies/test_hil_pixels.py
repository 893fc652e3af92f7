"""HIL from pixels: frames flow through the demos, both replays (uint8), the operator's steps, the behaviour-cloning
step, evaluation and the export (a camera input, as sac's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from s2r.policies.algorithm import AlgorithmTaskMismatch
from s2r.policies.driver import Budget, new_run_spec, train
from s2r.policies.hil import INTERVENED, PROPOSED
from s2r.policies.replay import ReplayBuffer
from s2r.real.episodes import read_episodes
from s2r.real.metadata import load_metadata

TASK = "Panda-PickPlace-Cube"
SIZE = (16, 16)
CAMERA = {"image": True, "image_size": SIZE, "max_episode_steps": 20}  # short episodes: fewer renders
ENCODER = {"learner.encoder.image_groups": "image", "learner.encoder.channels": 8, "learner.encoder.num_layers": 2,
           "learner.encoder.feature_dim": 16, "learner.encoder.pad": 2}
TINY = {"num_demos": 2, "learning_starts": 30, "eval_episodes": 1, "eval_every": 10**6, "steps_per_iteration": 20,
        "learner.batch_size": 16, "learner.actor_hidden": (32,), "learner.critic_hidden": (32,), "torch_threads": 1,
        "buffer_capacity": 1000, **ENCODER}


def _buffers(run: Path, obs_dim: int, n_envs: int) -> tuple[ReplayBuffer, ReplayBuffer]:
    dims = {"policy": obs_dim, "image": (*SIZE, 3), PROPOSED: 4, INTERVENED: 1}
    dtypes = {"image": "uint8"}
    return (ReplayBuffer(dims, 4, 1000, num_envs=n_envs, directory=run / "replay", obs_dtypes=dtypes),
            ReplayBuffer(dims, 4, 1000, num_envs=1, directory=run / "interventions", obs_dtypes=dtypes))


def test_frames_reach_both_buffers_the_losses_and_the_actor(tmp_path) -> None:
    """Fast plumbing: a few collect steps by hand, no evaluation or export (those are in the slow test)."""
    from s2r.policies.algorithm import RunContext
    from s2r.policies.hil import HilRL
    from s2r.policies.rundir import RunDir

    quick = {**TINY, "learning_starts": 8, "operator_cfg.patience": 1, "operator_cfg.reaction_delay": 0}
    spec = new_run_spec("hil", TASK, task_overrides=CAMERA, algo_overrides=quick, num_envs=2)
    algo = HilRL(RunContext(task_id=TASK, task_cfg=spec.task_cfg, cfg=spec.cfg, run=RunDir(tmp_path / "run"), seed=0))
    try:
        _, demos = read_episodes(tmp_path / "run" / "demos")
        assert demos[0].obs["image"].shape[1:] == (*SIZE, 3)  # recorded with the run's camera
        before = [p.detach().clone() for p in algo.learner.encoder.parameters()]
        algo._start()
        for _ in range(8):
            algo._collect_step()
        assert len(algo.buffer) == 16 and algo.buffer._obs["image"].dtype == np.uint8
        flags = algo.buffer._obs[INTERVENED][:16, 0] > 0
        assert flags.any()  # an untrained policy strays at once: the operator drove some steps
        assert np.array_equal(algo.demo_buffer._obs["image"][len(algo.demo_buffer) - 1],
                              algo.buffer._obs["image"][:16][flags][-1])
        assert algo.learner.updates > 0 and "bc_loss" in algo._metrics
        moved = [not np.allclose(a, b.detach()) for a, b in zip(before, algo.learner.encoder.parameters(), strict=True)]
        assert all(moved)  # the critic loss trains the encoder
        action = algo.learner.act({g: algo._obs[g] for g in algo.groups}, deterministic=True)
        assert action.shape == (2, 4)
    finally:
        algo.close()


@pytest.mark.slow
def test_frames_flow_through_demos_replays_interventions_and_export(tmp_path) -> None:
    run = tmp_path / "run"
    res = train(new_run_spec("hil", TASK, task_overrides=CAMERA, algo_overrides=TINY, num_envs=2,
                             budget=Budget(steps=40)), run, progress=False)
    assert res["progress"] == 40 and res["export"]["max_abs_diff"] < 1e-5
    assert "bc_loss" in res and "critic_loss" in res  # both losses ran on image batches
    meta, demos = read_episodes(run / "demos")
    assert meta.image_shapes == {"image": (*SIZE, 3)} and demos[0].obs["image"].dtype == np.uint8
    online, demo = _buffers(run, meta.obs_dims["policy"], 2)
    try:
        assert len(online) == 40
        frames = online._obs["image"][:40]
        assert frames.dtype == np.uint8 and frames.std() > 5  # rendered scenes, not zeros
        assert not np.array_equal(online._next_obs["image"][:40], frames)
        flags = online._obs[INTERVENED][:40, 0] > 0
        demo_steps = sum(len(e.actions) for e in demos)
        assert flags.any() and len(demo) == demo_steps + int(flags.sum())  # operator steps went to both buffers...
        first = demos[0].obs["image"][0]
        assert np.array_equal(demo._obs["image"][0], first)  # ...and the demo frames come first, as recorded
        taken = demo._obs["image"][demo_steps: len(demo)]
        assert np.array_equal(taken, frames[flags])  # ...with the frames the operator acted on
    finally:
        online.close()
        demo.close()
    policy = load_metadata(run / "policy.json")
    assert [(o.name, o.camera, o.dtype) for o in policy.observation] == [("obs", None, "float32"),
                                                                          ("image", "workspace", "uint8")]
    from s2r.policies.evaluate import evaluate_success

    assert evaluate_success(run, episodes=2)["episodes"] == 2  # the exported policy runs from the camera


@pytest.mark.slow
def test_hil_from_pixels_learns_the_operator_actions(tmp_path) -> None:
    """A longer pixel run on lift: the actor (reading image features + state) fits the demo and operator actions."""
    import json

    run = tmp_path / "run"
    overrides = {**TINY, "num_demos": 4, "learning_starts": 100, "eval_every": 300, "eval_episodes": 2}
    train(new_run_spec("hil", "Panda-Lift-Cube", task_overrides={"image": True, "image_size": SIZE},
                       algo_overrides=overrides, num_envs=2, budget=Budget(steps=600)), run, progress=False)
    rows = json.loads((run / "history.json").read_text())
    rows = rows if isinstance(rows, list) else rows["rows"]
    bc = [r["bc_loss"] for r in rows if "bc_loss" in r]
    assert len(bc) >= 5 and np.mean(bc[-3:]) < 0.5 * np.mean(bc[:2]), bc
    assert all(np.isfinite(r["critic_loss"]) for r in rows if "critic_loss" in r)


def test_image_groups_the_task_does_not_render_and_the_link_are_refused(tmp_path) -> None:
    with pytest.raises(AlgorithmTaskMismatch, match=r"names 'image', which is not an image group of task "
                                                    r"'Panda-PickPlace-Cube' \(its image groups: none; enable its camera\)"):
        train(new_run_spec("hil", TASK, algo_overrides=TINY, budget=Budget(steps=10)), tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match=r"hil with link= learns from the policy vector the actors send: drop "
                                         r"learner\.encoder\.image_groups"):
        new_run_spec("hil", TASK, algo_overrides={**ENCODER, "link": "127.0.0.1:0"})
