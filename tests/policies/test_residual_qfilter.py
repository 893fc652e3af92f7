"""The pessimistic Q-filter of residual RL (issue 13): the residual is applied only where the critic ensemble is
confident it beats the base action; elsewhere the policy acts with the base. Real torch networks throughout:
the critics are fitted to a known preference, then the filter is judged against it."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from s2r.policies.offpolicy import OffPolicyConfig, OffPolicyLearner, residual_compose
from s2r.policies.residual import BASE_GROUP, ResidualConfig

STEPS = 150
SCALE = 0.5  # large, so the critics' fit resolves the residual's effect within a few hundred steps
DIMS = {"policy": 3, BASE_GROUP: 2}
CFG = OffPolicyConfig(actor="deterministic", actor_obs=("policy", BASE_GROUP), critic_obs=("policy", BASE_GROUP),
                      actor_hidden=(16,), critic_hidden=(32, 32), num_critics=4, q_filter=1.0,
                      exploration_noise=0.3)


# Reproducible and fair to the other tests sharing the machine (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _obs(n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {"policy": torch.randn(n, 3, generator=gen), BASE_GROUP: torch.rand(n, 2, generator=gen) - 0.5}  # no clipping at +-1


def _learner(best_offset: float, cfg: OffPolicyConfig = CFG) -> OffPolicyLearner:
    """A residual learner whose actor always outputs tanh(1) = 0.76 and whose critics (every head fitted to the
    same target) rate an action by -|a - (base + best_offset)|^2: best_offset 0 prefers the base."""
    torch.manual_seed(0)
    learner = OffPolicyLearner(DIMS, 2, cfg, compose=residual_compose(SCALE, BASE_GROUP))
    last = [m for m in learner.actor.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(1.0)
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(learner.critic.parameters(), lr=1e-2)
    for _ in range(STEPS):
        obs = _obs(64, gen)
        # Actions around the base, as far out as the residual reaches and a little beyond.
        a = obs[BASE_GROUP] + 0.6 * (torch.rand(64, 2, generator=gen) * 2 - 1)
        target = -(a - obs[BASE_GROUP] - best_offset).square().sum(-1)
        q = learner.critic(torch.cat([learner.critic_input(obs), a], dim=-1)).squeeze(-1)  # (E, batch)
        loss = (q - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return learner


def test_filtered_action_is_the_base_where_the_critic_prefers_the_base() -> None:
    learner = _learner(best_offset=0.0)
    obs = _obs(500, torch.Generator().manual_seed(2))
    base = obs[BASE_GROUP]
    filtered = learner.act(obs, deterministic=True)
    assert torch.equal(filtered, base), "the filter let a residual through that every critic rates below the base"
    assert learner.last_filter_keep == 0.0
    raw = learner.act(obs, deterministic=True, filtered=False)
    torch.testing.assert_close(raw, base + SCALE * torch.tanh(torch.tensor(1.0)))
    # Collecting: the exploration noise is added after the filter, so it explores around the base, not the residual.
    noisy = learner.act(obs) - base
    assert noisy.mean().abs() < 0.02 and 0.12 < noisy.std() < 0.18  # std 0.3 of the residual, scale 0.5


def test_filter_keeps_a_residual_the_critics_agree_on_and_k_makes_it_pessimistic() -> None:
    residual = SCALE * float(torch.tanh(torch.tensor(1.0)))
    learner = _learner(best_offset=residual)
    obs = _obs(500, torch.Generator().manual_seed(2))
    kept = learner.act(obs, deterministic=True)
    torch.testing.assert_close(kept, obs[BASE_GROUP] + residual)
    assert learner.last_filter_keep > 0.95
    # The same critics with an absurd k: the heads never agree that well, so the base is used everywhere.
    strict = OffPolicyLearner(DIMS, 2, replace(CFG, q_filter=1e6), compose=residual_compose(SCALE, BASE_GROUP))
    strict.actor.load_state_dict(learner.actor.state_dict())
    strict.critic.load_state_dict(learner.critic.state_dict())
    assert torch.equal(strict.act(obs, deterministic=True), obs[BASE_GROUP])


def test_q_filtered_bc_pulls_the_actor_to_the_base_only_where_the_filter_rejects() -> None:
    obs = _obs(128, torch.Generator().manual_seed(3))
    a = torch.tanh(torch.tensor(1.0))
    for best, rejected in ((0.0, True), (SCALE * float(a), False)):
        plain = _learner(best)
        bc = OffPolicyLearner(DIMS, 2, replace(CFG, q_filter_bc=2.0), compose=residual_compose(SCALE, BASE_GROUP))
        bc.actor.load_state_dict(plain.actor.state_dict())
        bc.critic.load_state_dict(plain.critic.state_dict())
        with torch.no_grad():
            loss_plain = plain._actor_loss_eager(obs, plain.alpha)[0]
            loss_bc = bc._actor_loss_eager(obs, bc.alpha)[0]
        extra = 2.0 * a.square() if rejected else torch.tensor(0.0)
        torch.testing.assert_close(loss_bc - loss_plain, extra, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: OffPolicyConfig(q_filter=-1.0), "OffPolicyConfig.q_filter must be None"),
    (lambda: OffPolicyConfig(q_filter=1.0, q_filter_bc=-1.0), "OffPolicyConfig.q_filter_bc must be >= 0"),
])
def test_bad_filter_settings_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_residual_runs_filter_by_default() -> None:
    learner = ResidualConfig().learner
    assert learner.q_filter == 1.0 and learner.q_filter_bc == 1.0


def test_filter_off_alone_turns_its_bc_term_off() -> None:
    """`--set learner.q_filter=none` is enough: the BC term filters with the same k, so it has nothing to do."""
    from s2r.sim.config import apply_overrides

    assert apply_overrides(ResidualConfig(), {"learner.q_filter": "none"}).learner.q_filter is None
    obs = _obs(64, torch.Generator().manual_seed(4))
    plain = _learner(0.0, replace(CFG, q_filter=None))
    bc = OffPolicyLearner(DIMS, 2, replace(CFG, q_filter=None, q_filter_bc=2.0), compose=residual_compose(SCALE, BASE_GROUP))
    bc.actor.load_state_dict(plain.actor.state_dict())
    bc.critic.load_state_dict(plain.critic.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(bc._actor_loss_eager(obs, bc.alpha)[0], plain._actor_loss_eager(obs, plain.alpha)[0])


def _onnx_run(module: torch.nn.Module, inputs: dict[str, torch.Tensor], tmp_path) -> torch.Tensor:
    import warnings

    import onnxruntime as ort

    path = tmp_path / "filtered.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(inputs.values()), str(path), input_names=list(inputs), output_names=["r"],
                          dynamic_axes={n: {0: "batch"} for n in [*inputs, "r"]}, opset_version=17, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(["r"], {n: v.numpy() for n, v in inputs.items()})[0])


@pytest.mark.parametrize("best", [0.0, 0.5 * SCALE * 0.7616, SCALE * 0.7616])
def test_exported_filter_acts_as_the_learner_does_through_onnxruntime(best: float, tmp_path) -> None:
    """Critics on the actor's own groups: the filter goes into the graph, and the graph's action (base + scale *
    filtered residual), through onnxruntime, is the learner's filtered action; at half the residual the heads
    split, so both branches of the filter are exercised."""
    from s2r.policies.residual import FilteredResidual

    stats = {"policy": (torch.full((3,), 0.2).numpy(), torch.full((3,), 1.5).numpy())}
    learner = _learner(best)
    normed = OffPolicyLearner(DIMS, 2, CFG, compose=residual_compose(SCALE, BASE_GROUP), obs_stats=stats)
    normed.actor.load_state_dict(learner.actor.state_dict())
    normed.critic.load_state_dict(learner.critic.state_dict())
    for lrn in (learner, normed):
        obs = _obs(400, torch.Generator().manual_seed(5))
        want = lrn.act(obs, deterministic=True)
        graph = FilteredResidual(lrn, SCALE)
        with torch.no_grad():
            r = graph(obs["policy"], obs[BASE_GROUP])
        torch.testing.assert_close(torch.clamp(obs[BASE_GROUP] + SCALE * r, -1, 1), want, atol=1e-6, rtol=0)
        torch.testing.assert_close(_onnx_run(graph, obs, tmp_path), r, atol=1e-5, rtol=0)
        kept = (r.abs().sum(-1) > 0).float().mean()
        torch.testing.assert_close(kept, torch.tensor(lrn.last_filter_keep))
    assert 0.0 <= lrn.last_filter_keep <= 1.0


def test_a_filter_on_privileged_critics_stays_out_of_the_graph() -> None:
    from s2r.policies.residual import FilteredResidual, exportable_filter

    assert exportable_filter(ResidualConfig().learner)  # the default critics read the robot's inputs only
    assert not exportable_filter(replace(ResidualConfig().learner, critic_obs=("policy", "privileged", BASE_GROUP)))
    assert not exportable_filter(replace(ResidualConfig().learner, critic_obs=("policy", BASE_GROUP), q_filter=None))
    priv = OffPolicyLearner({**DIMS, "privileged": 2}, 2, replace(CFG, critic_obs=("policy", "privileged", BASE_GROUP)),
                            compose=residual_compose(SCALE, BASE_GROUP))
    with pytest.raises(ValueError, match="cannot go into the exported graph"):
        FilteredResidual(priv, SCALE)
