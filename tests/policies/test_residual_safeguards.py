"""The residual RL paper's safeguards (issue 13): the first actor updates must not wreck the base, and each
safeguard does what its config field says (warm-up around the base, progressive exploration, normaliser
bounds, demo relabelling with a fresh chunk history, the actor's ensemble reduction)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from s2r.policies.bc import BCConfig, load_bc, train_bc
from s2r.policies.demos import collect_demos
from s2r.policies.driver import Budget, RunDriver, RunSpec
from s2r.policies.offpolicy import OffPolicyConfig, OffPolicyLearner
from s2r.policies.residual import BASE_GROUP, ResidualConfig, demo_stats, demos_with_base
from s2r.real.episodes import read_episodes
from s2r.sim import task_config

TASK = "Panda-Lift-Cube"

# What residual RL ran with before issue 13 (bench/results/README.md, issue 4): the settings that collapsed.
ISSUE4 = dict(scale=0.2, learning_starts=2_000, warmup_noise=None, min_obs_std=0.0, min_action_range=0.0)
ISSUE4_LEARNER = dict(actor_lr=1e-4, critic_lr=3e-4, exploration_noise=0.3, target_noise=0.2, target_noise_clip=0.5,
                      policy_delay=2, max_grad_norm=None, q_filter=None, q_filter_bc=0.0)

# Largest change of any env action (normalised units, actions span [-1, 1]) the first actor updates may make:
# a tenth of the residual's own bound, i.e. 0.5% of the action range.
FIRST_UPDATES_BOUND = 0.01


# Reproducible and fair to the other tests sharing the machine (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A small BC base cloned from a few expert demos (its quality does not matter here)."""
    root = tmp_path_factory.mktemp("safeguards")
    collect_demos(TASK, root / "demos", 4, noise=0.05, num_envs=4, progress=False)
    train_bc(TASK, root / "demos", root / "bc", BCConfig(updates=30, hidden=(32, 32)), progress=False)
    return root / "bc"


def _spec(cfg: ResidualConfig, steps: int) -> RunSpec:
    return RunSpec(algo="residual", task_id=TASK, task_cfg=task_config(TASK), cfg=cfg, budget=Budget(steps=steps))


def _small_run(base: Path, **kw) -> ResidualConfig:
    """Default safeguards, the real network sizes; only the counts shrink to fit a test."""
    return ResidualConfig(base=str(base), num_envs=4, eval_every=100_000, eval_episodes=4, checkpoint_every=100_000,
                          buffer_capacity=10_000, torch_threads=1, **kw)


def _drift_after_first_actor_updates(base: Path, run_dir: Path, actor_updates: int, info: dict | None = None,
                                     **changes) -> tuple[float, int]:
    """Largest |policy action - base action| over demo states after the actor's first `actor_updates` updates.

    The run collects 64 warm-up transitions, fits the critics for 20 updates, then goes on until the default
    settings have made `actor_updates` actor updates; any other settings get the same env steps.
    """
    learner_changes = {k: changes.pop(k) for k in list(changes) if k in ISSUE4_LEARNER}
    cfg = _small_run(base, **{**changes, "learning_starts": 64})
    cfg = replace(cfg, learner=replace(cfg.learner, critic_warmup_updates=20, **learner_changes))
    default = ResidualConfig().learner
    updates = 20 + default.policy_delay * actor_updates
    steps = 64 + int(updates / default.utd_ratio)
    driver = RunDriver(_spec(cfg, steps), run_dir, progress=False)
    try:
        driver.learn()
        algo = driver.algo
        batch = algo.demos.sample(512, generator=torch.Generator().manual_seed(0))
        act = algo.learner.act(batch.obs, deterministic=True)
        made = algo.learner.updates
        if info is not None:
            info.update(gain=algo.ramp(), scale=algo.cfg.scale)
    finally:
        driver.close()
    assert made >= updates - 2  # the run got as far as the actor updates it is judged on
    return float((act - batch.obs[BASE_GROUP]).abs().max()), made


def test_first_actor_updates_keep_the_policy_at_the_base(base, tmp_path):
    """The collapse, caught in CI: 25 actor updates with the defaults move no action by more than the bound;
    the pre-issue-13 settings, same env steps and data, move them far beyond it (so the bound can fail)."""
    safe, _ = _drift_after_first_actor_updates(base, tmp_path / "safe", 25)
    old, _ = _drift_after_first_actor_updates(base, tmp_path / "old", 25,
                                             **ISSUE4, **ISSUE4_LEARNER)
    print(f"drift after the first actor updates: defaults {safe:.5f}, issue-4 settings {old:.5f}")
    assert safe <= FIRST_UPDATES_BOUND, f"the first actor updates moved an action by {safe:.4f}"
    assert old > 3 * FIRST_UPDATES_BOUND, f"the old settings moved actions by only {old:.4f}"


def test_the_ramp_bounds_what_the_first_actor_updates_apply(base, tmp_path):
    """`ramp_steps`: the settings that move actions far (above) move them by at most gain * scale, the gain is
    where the updates put it, and the export applies (and records) that bound, not the full one."""
    info: dict = {}
    drift, made = _drift_after_first_actor_updates(base, tmp_path / "ramp", 25, info, ramp_steps=2_000,
                                                   **ISSUE4, **ISSUE4_LEARNER)
    lcfg = ResidualConfig().learner
    gain = (made - 20) / (2_000 * lcfg.utd_ratio)  # 20: the test's critic-only updates
    assert info["gain"] == pytest.approx(gain) and 0.05 < gain < 0.2
    assert 0.0 < drift <= gain * info["scale"] + 1e-6, f"drift {drift:.5f}, bound {gain * info['scale']:.5f}"
    meta = json.loads((tmp_path / "ramp" / "policy.json").read_text())
    assert meta["residual"]["scale"] == pytest.approx(gain * info["scale"])


def test_warmup_and_progressive_exploration_act_around_the_base(base, tmp_path):
    cfg = _small_run(base, learning_starts=1_000, progressive_steps=1_000)
    driver = RunDriver(_spec(cfg, 8), tmp_path / "run", progress=False)
    try:
        algo = driver.algo
        algo._start()
        rng = np.random.default_rng(0)
        b = rng.uniform(-0.8, 0.8, size=(4_000, algo.env.spec.action_dim)).astype(np.float32)
        policy = np.tile(algo._obs["policy"][:1], (len(b), 1))
        o = {"policy": policy, "privileged": np.tile(algo._obs["privileged"][:1], (len(b), 1)), BASE_GROUP: b}
        # Env-step warm-up: the base action plus uniform noise of +-0.2, whatever the (zero) residual.
        d = algo._explore(o) - b
        assert np.abs(d).max() <= 0.2 + 1e-6 and 0.1 < d.std() < 0.13  # uniform(-0.2, 0.2) has std 0.115
        # Progressive exploration: at the start of learning no env applies the residual, at the end every env.
        algo.progress = cfg.learning_starts
        assert np.array_equal(algo._explore(o), b)
        algo.progress = cfg.learning_starts + cfg.progressive_steps // 2
        moved = (algo._explore(o) != b).any(-1).mean()
        assert 0.4 < moved < 0.6
        algo.progress = cfg.learning_starts + cfg.progressive_steps
        assert (algo._explore(o) != b).any(-1).all()
        noise = algo._explore(o) - b  # exploration std 0.05 of the residual, scale 0.1
        assert 0.003 < noise.std() < 0.007
    finally:
        driver.close()


def test_warmup_offsets_hold_for_an_episode_and_are_drawn_again_after_it(base, tmp_path):
    cfg = _small_run(base, learning_starts=1_000, warmup_noise=0.0, warmup_offset=0.05)
    driver = RunDriver(_spec(cfg, 8), tmp_path / "run", progress=False)
    try:
        algo = driver.algo
        algo._start()
        o = algo._with_base(algo._obs, algo._b)
        first = algo._explore(o) - o[BASE_GROUP]
        assert np.allclose(algo._explore(o) - o[BASE_GROUP], first, atol=1e-6)  # the same offset, step after step
        assert 0.0 < np.abs(first).max() <= 0.05 + 1e-6 and len(np.unique(first.round(6))) > 4
        algo._offset[1] = algo._draw_offsets(1)  # what an episode end does for env 1
        again = algo._explore(o) - o[BASE_GROUP]
        assert np.allclose(again[[0, 2, 3]], first[[0, 2, 3]], atol=1e-6) and not np.allclose(again[1], first[1])
    finally:
        driver.close()


def test_normaliser_bounds_and_demo_relabelling(base):
    bc, bc_cfg, ckpt = load_bc(base)
    _, eps = read_episodes(ckpt["demos"], task=TASK)
    eps = eps[:2]
    # The base's own action at each step, with a fresh chunk history per episode: replaying the same episode
    # twice gives the same actions; carrying the history over (the ablation) changes the second one's start.
    twice = [eps[0], eps[0]]
    fresh = demos_with_base(twice, bc, bc_cfg.ensemble_m)
    stale = demos_with_base(twice, bc, bc_cfg.ensemble_m, reset_history=False)
    np.testing.assert_array_equal(fresh[0].obs[BASE_GROUP], fresh[1].obs[BASE_GROUP])
    assert not np.array_equal(stale[1].obs[BASE_GROUP][:3], fresh[1].obs[BASE_GROUP][:3])
    assert not np.allclose(fresh[0].obs[BASE_GROUP][:-1], eps[0].actions)  # noisy demos: the base differs
    own = demos_with_base(eps, bc, bc_cfg.ensemble_m, relabel=False)
    np.testing.assert_array_equal(own[0].obs[BASE_GROUP][:-1], eps[0].actions)

    # A constant feature gets std 0.1, not 1e-3; the base action maps its range (at least 0.1 wide) to [-1, 1].
    labelled = demos_with_base(eps, bc, bc_cfg.ensemble_m)
    labelled[0].obs["policy"][:, 0] = 0.5
    labelled[1].obs["policy"][:, 0] = 0.5
    labelled[0].obs[BASE_GROUP][:, 1] = 0.3
    labelled[1].obs[BASE_GROUP][:, 1] = 0.3
    stats = demo_stats(labelled, ["policy"], ResidualConfig())
    assert stats["policy"][1][0] == pytest.approx(0.1) and (stats["policy"][1] >= 0.1).all()
    centre, half = stats[BASE_GROUP]
    assert centre[1] == pytest.approx(0.3) and half[1] == pytest.approx(0.05)
    a = np.concatenate([e.obs[BASE_GROUP] for e in labelled])
    assert np.abs((a - centre) / half).max() <= 1.0 + 1e-5
    old = demo_stats(labelled, ["policy"], ResidualConfig(min_obs_std=0.0, min_action_range=0.0))
    assert old["policy"][1][0] == pytest.approx(1e-3) and BASE_GROUP not in old


def test_actor_climbs_the_ensemble_mean_or_min() -> None:
    torch.manual_seed(0)
    dims = {"policy": 3}
    cfg = OffPolicyConfig(actor="deterministic", actor_hidden=(16,), critic_hidden=(16,), num_critics=4)
    mean = OffPolicyLearner(dims, 2, cfg)
    low = OffPolicyLearner(dims, 2, replace(cfg, actor_q="min"))
    low.actor.load_state_dict(mean.actor.state_dict())
    low.critic.load_state_dict(mean.critic.state_dict())
    obs = {"policy": torch.randn(32, 3)}
    with torch.no_grad():
        a, _ = mean.policy(obs, sample=False)
        qs = mean.critic(torch.cat([obs["policy"], a], dim=-1)).squeeze(-1)
        torch.testing.assert_close(mean._actor_loss_eager(obs, mean.alpha)[0], -qs.mean(0).mean())
        torch.testing.assert_close(low._actor_loss_eager(obs, low.alpha)[0], -qs.amin(0).mean())


@pytest.mark.parametrize(("make", "message"), [
    (lambda: ResidualConfig(scale=0.0), "ResidualConfig.scale must be in"),
    (lambda: ResidualConfig(warmup_noise=-0.1), "ResidualConfig.warmup_noise must be None or in"),
    (lambda: ResidualConfig(progressive_steps=-1), "ResidualConfig.progressive_steps must be >= 0"),
    (lambda: ResidualConfig(ramp_steps=-1), "ResidualConfig.ramp_steps must be >= 0"),
    (lambda: ResidualConfig(warmup_offset=-0.1), "ResidualConfig.warmup_offset must be >= 0"),
    (lambda: ResidualConfig(warmup_offset=0.05, warmup_noise=None), "ResidualConfig.warmup_offset is added to the warm-up"),
    (lambda: ResidualConfig(min_obs_std=-1.0), "ResidualConfig.min_obs_std must be >= 0"),
    (lambda: OffPolicyConfig(actor_q="max"), "OffPolicyConfig.actor_q must be 'mean' or 'min'"),
    (lambda: OffPolicyConfig(demo_fraction=1.5), "OffPolicyConfig.demo_fraction must be in"),
])
def test_bad_safeguard_settings_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()
