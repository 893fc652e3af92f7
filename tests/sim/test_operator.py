"""The simulated operator: takes over a straying policy after its reaction time, leaves a good one alone."""

from __future__ import annotations

import numpy as np
import pytest
from s2r.real.intervention import InterventionMixer
from s2r.sim import make
from s2r.sim.operator import SimulatedOperator, SimulatedOperatorConfig
from s2r.sim.tasks.experts import make_expert

TASK = "Panda-Lift-Cube"


def _run(policy: str, cfg: SimulatedOperatorConfig, steps: int = 50, n: int = 4) -> dict:
    env = make(TASK, n, seed=3)
    op = SimulatedOperator(TASK, n, cfg, seed=3)
    twin = make_expert(TASK, n, seed=4)  # a separate expert standing in for a policy that has learned the task
    mix = InterventionMixer(n, env.spec.action_dim)
    obs = env.reset(seed=3)
    op.reset()
    twin.reset()
    rng = np.random.default_rng(0)
    first = np.full(n, -1)
    intervened, successes = 0, 0
    try:
        for t in range(steps):
            if policy == "expert":
                pa = twin.act(obs)
            else:  # wanders: pushes the arm up and away, the gripper random
                pa = np.concatenate([np.tile([0.0, 0.0, 1.0], (n, 1)), rng.uniform(-1, 1, (n, 1))], 1).astype(np.float32)
            s = mix.step(pa, op(obs, pa))
            first[(first < 0) & s.started] = t
            intervened += int(s.intervened.sum())
            obs, _, term, trunc, info = env.step(s.executed)
            successes += int(np.asarray(info["success"]).sum())
            done = np.flatnonzero(np.logical_or(term, trunc))
            if len(done):
                op.reset(done)
                twin.reset(done)
                mix.reset(done)
    finally:
        env.close()
    return {"first": first, "rate": intervened / (steps * n), "successes": successes, "takeovers": op.takeovers}


def test_operator_takes_over_a_wandering_policy_after_its_reaction_time() -> None:
    cfg = SimulatedOperatorConfig(patience=3, reaction_delay=2, noise=0.0)
    out = _run("wander", cfg)
    # Noticed after `patience` straying steps, in control `reaction_delay` steps later (step index 4 at the earliest).
    assert (out["first"] >= cfg.patience + cfg.reaction_delay - 1).all() and (out["first"] >= 0).all()
    assert out["rate"] > 0.3
    assert out["successes"] >= 1  # the operator's takeovers finish some episodes for the policy


def test_operator_leaves_a_good_policy_alone() -> None:
    out = _run("expert", SimulatedOperatorConfig(noise=0.0))
    assert out["rate"] < 0.05


def test_operator_effort_is_capped_per_episode() -> None:
    out = _run("wander", SimulatedOperatorConfig(max_takeovers=1, max_takeover_steps=8, noise=0.0), steps=40)
    assert (out["takeovers"] <= 1).all()
    assert out["rate"] < 0.35


def test_bad_operator_config_is_one_sentence() -> None:
    with pytest.raises(ValueError, match="max_takeover_steps"):
        SimulatedOperatorConfig(takeover_steps=10, max_takeover_steps=5)
