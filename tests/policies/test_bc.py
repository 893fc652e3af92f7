"""Action-chunking BC: the ensembling maths, the dataset, the exported stateful graph and its runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from s2r.policies.bc import BCConfig, ChunkedBC, ChunkedPolicyGraph, demo_dataset, fit_bc, temporal_ensemble
from s2r.real.chunking import ChunkHistory, ensemble_weights
from s2r.real.episodes import Episode


def _reference_actions(chunks: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Step t executes the weighted mean of chunk[t - age][age] over the chunks that exist."""
    t_len, k, _ = chunks.shape
    out = []
    for t in range(t_len):
        ages = range(min(t, k - 1) + 1)
        num = sum(w[a] * chunks[t - a, a] for a in ages)
        out.append(num / sum(w[a] for a in ages))
    return np.stack(out)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_history_plus_graph_ensemble_equals_reference(k):
    rng = np.random.default_rng(k)
    chunks = rng.uniform(-1, 1, (9, k, 3)).astype(np.float32)
    w = ensemble_weights(k, 0.3)
    hist = ChunkHistory(1, k, 3)
    got = []
    for t in range(9):
        if t == 6:  # an episode boundary: the next step sees only its own chunk
            hist.reset()
        feed = hist.feed()
        a = temporal_ensemble(torch.from_numpy(chunks[t : t + 1]), torch.from_numpy(feed["past_chunks"]),
                              torch.from_numpy(feed["past_mask"]), torch.from_numpy(w))
        got.append(a.numpy()[0])
        hist.push(chunks[t : t + 1])
    want = np.concatenate([_reference_actions(chunks[:6], w), _reference_actions(chunks[6:], w)])
    np.testing.assert_allclose(np.stack(got), want, atol=1e-6)


def test_dataset_masks_steps_past_the_end_and_skips_failures():
    def ep(t, success):
        return Episode(obs={"policy": np.arange(t + 1, dtype=np.float32)[:, None]},
                       actions=np.arange(t, dtype=np.float32)[:, None], rewards=np.zeros(t, np.float32),
                       terminated=success, success=success)

    x, y, m = demo_dataset([ep(3, True), ep(5, False)], ("policy",), chunk=3, successful_only=True)
    assert x.shape == (3, 1) and y.shape == (3, 3, 1)
    np.testing.assert_array_equal(y[1, :, 0], [1, 2, 2])  # padded with the last action ...
    np.testing.assert_array_equal(m[1], [1, 1, 0])  # ... and masked out of the loss
    with pytest.raises(ValueError, match="none succeeded"):
        demo_dataset([ep(3, False)], ("policy",), chunk=2, successful_only=True)


def test_bc_fits_a_smooth_expert():
    # Expert: action = tanh of a fixed linear map of the observation, held over the chunk.
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(2000, 6)).astype(np.float32) * 3 + 1
    wmat = rng.normal(size=(6, 2)).astype(np.float32) * 0.3
    act = np.tanh((obs - 1) / 3 @ wmat * 3)
    targets = np.repeat(act[:, None], 2, axis=1)
    cfg = BCConfig(chunk=2, hidden=(64, 64), updates=600, batch_size=128)
    model = ChunkedBC(6, 2, cfg)
    with torch.no_grad():
        before = float((model(torch.from_numpy(obs)) - torch.from_numpy(targets)).abs().mean())
    fit_bc(model, obs, targets, np.ones((2000, 2), np.float32), cfg)
    with torch.no_grad():
        after = float((model(torch.from_numpy(obs)) - torch.from_numpy(targets)).abs().mean())
    assert after < 0.25 * before and after < 0.08


def test_exported_graph_runs_step_by_step_like_torch(tmp_path):
    import onnxruntime as ort
    from s2r.policies.bc import export_chunked
    from s2r.sim import make

    env = make("Puck-Velocity-Flat", 4, seed=0)
    try:
        cfg = BCConfig(chunk=3, hidden=(32,), updates=1)
        model = ChunkedBC(env.obs_dims["policy"], env.spec.action_dim, cfg)
        model.normalizer.update(torch.randn(100, model.obs_dim))
        graph = ChunkedPolicyGraph(model, cfg.ensemble_m)
        obs = np.random.default_rng(0).normal(size=(16, model.obs_dim)).astype(np.float32)
        export_chunked(graph, env.spec, "Puck-Velocity-Flat", tmp_path, obs)
    finally:
        env.close()
    from s2r.policies.evaluate import OnnxPolicy

    policy = OnnxPolicy(tmp_path)
    assert policy.chunk.size == 3 and policy.chunk.ensemble_m == cfg.ensemble_m
    assert policy.meta.algo == "bc" and policy.meta.action.kind == "joint_position" and policy.meta.residual is None
    hist = ChunkHistory(4, 3, env.spec.action_dim)
    for t in range(5):
        x = obs[4 * (t % 4) : 4 * (t % 4) + 4]
        got = policy(x)
        with torch.no_grad():
            feed = hist.feed()
            want, chunk = graph(torch.from_numpy(x), torch.from_numpy(feed["past_chunks"]), torch.from_numpy(feed["past_mask"]))
        hist.push(chunk.numpy())
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    assert ort.InferenceSession(str(tmp_path / "policy.onnx")).get_inputs()[1].shape[1:] == [2, 3, env.spec.action_dim]


def test_demos_record_image_groups_and_bc_reads_the_vector_groups(tmp_path, renderer_or_skip) -> None:
    from s2r.policies.demos import collect_demos
    from s2r.policies.driver import Budget, RunSpec, train
    from s2r.real.episodes import read_episodes
    from s2r.sim import task_config

    task, over = "Panda-Lift-Cube", {"image": "true", "image_size": "24,32"}
    collect_demos(task, tmp_path / "demos", 1, num_envs=1, noise=0.0, task_overrides=over, progress=False)
    meta, eps = read_episodes(tmp_path / "demos", task=task)
    assert meta.image_shapes == {"image": (24, 32, 3)}
    img = eps[0].obs["image"]
    assert img.dtype == np.uint8 and img.shape == (eps[0].length + 1, 24, 32, 3) and img.std() > 0
    cfg = BCConfig(demos=str(tmp_path / "demos"), updates=20, hidden=(16,), successful_only=False)
    spec = RunSpec(algo="bc", task_id=task, task_cfg=task_config(task, over), cfg=cfg, budget=Budget(steps=20))
    res = train(spec, tmp_path / "bc", progress=False)
    assert res["progress"] == 20 and res["export"]["max_abs_diff"] <= 1e-5
