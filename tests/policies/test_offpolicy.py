"""Off-policy learner: ensemble maths, targets, hooks, failure handling, persistence, and that it learns."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from s2r.policies.networks import EnsembleMLP
from s2r.policies.offpolicy import NonFiniteLossError, OffPolicyConfig, OffPolicyLearner, residual_compose
from s2r.policies.replay import Batch, ReplayBuffer
from torch import nn

SMALL = OffPolicyConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), num_critics=5, critic_subset=2, batch_size=64)
DIMS = {"policy": 3, "base_action": 2}


# Reproducible and fair to the other tests sharing the machine (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(n: int = 64, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)

    def obs() -> dict[str, torch.Tensor]:
        return {"policy": torch.randn(n, 3, generator=g), "base_action": torch.rand(n, 2, generator=g) * 2 - 1}

    return Batch(obs=obs(), action=torch.rand(n, 2, generator=g) * 2 - 1, reward=torch.randn(n, generator=g),
                 next_obs=obs(), discount=torch.full((n,), 0.9))


def test_ensemble_forward_matches_a_per_member_loop() -> None:
    torch.manual_seed(0)
    net = EnsembleMLP(4, 6, (16, 8), 1, activation="relu", layer_norm=True)
    with torch.no_grad():  # non-trivial LayerNorm affines, different per member
        for n in net.norms:
            n.weight.normal_()
            n.bias.normal_()
    x = torch.randn(32, 6)

    def member(i: int, h: torch.Tensor) -> torch.Tensor:
        for lin, norm in zip(net.linears, net.norms, strict=True):
            h = h @ lin.weight[i] + lin.bias[i, 0]
            h = nn.functional.layer_norm(h, h.shape[-1:], norm.weight[i, 0], norm.bias[i, 0])
            h = torch.relu(h)
        return h @ net.out.weight[i] + net.out.bias[i, 0]

    ref = torch.stack([member(i, x) for i in range(4)])
    assert torch.allclose(net(x), ref, atol=1e-5)
    assert torch.allclose(net(x.expand(4, 32, 6)), ref, atol=1e-5)  # per-member inputs
    idx = torch.tensor([3, 1])
    assert torch.allclose(net(x, idx), ref[idx], atol=1e-5)


def test_ensemble_gradients_match_separate_per_member_mlps() -> None:
    """The batched critic trains like E separate nn.Linear/nn.LayerNorm MLPs (the per-head design it replaced)."""
    torch.manual_seed(1)
    e, d = 3, 5
    net = EnsembleMLP(e, d, (16, 8), 1, activation="relu", layer_norm=True)
    with torch.no_grad():
        for n in net.norms:
            n.weight.normal_()
            n.bias.normal_()
    heads = []
    for i in range(e):
        layers: list[nn.Module] = []
        for lin, norm in zip(net.linears, net.norms, strict=True):
            linear, ln = nn.Linear(*lin.weight.shape[1:]), nn.LayerNorm(lin.weight.shape[2])
            with torch.no_grad():
                linear.weight.copy_(lin.weight[i].T)
                linear.bias.copy_(lin.bias[i, 0])
                ln.weight.copy_(norm.weight[i, 0])
                ln.bias.copy_(norm.bias[i, 0])
            layers += [linear, ln, nn.ReLU()]
        out = nn.Linear(net.out.weight.shape[1], 1)
        with torch.no_grad():
            out.weight.copy_(net.out.weight[i].T)
            out.bias.copy_(net.out.bias[i, 0])
        heads.append(nn.Sequential(*layers, out))
    x, target = torch.randn(32, d), torch.randn(32)
    # The critic loss's form: every member's own MSE to a shared target, summed.
    (net(x).squeeze(-1) - target).square().mean(1).sum().backward()
    sum((h(x).squeeze(-1) - target).square().mean() for h in heads).backward()
    for i, head in enumerate(heads):
        linears = [m for m in head if isinstance(m, nn.Linear)]
        norms = [m for m in head if isinstance(m, nn.LayerNorm)]
        for lin, ref in zip([*net.linears, net.out], linears, strict=True):
            assert torch.allclose(lin.weight.grad[i], ref.weight.grad.T, atol=1e-5)
            assert torch.allclose(lin.bias.grad[i, 0], ref.bias.grad, atol=1e-5)
        for norm, ref in zip(net.norms, norms, strict=True):
            assert torch.allclose(norm.weight.grad[i, 0], ref.weight.grad, atol=1e-5)
            assert torch.allclose(norm.bias.grad[i, 0], ref.bias.grad, atol=1e-5)


def _constant_target_critics(learner: OffPolicyLearner, values: list[float]) -> None:
    """Make target critic i output values[i] whatever the input."""
    with torch.no_grad():
        learner.critic_target.out.weight.zero_()
        learner.critic_target.out.bias.copy_(torch.tensor(values).view(-1, 1, 1))


def test_target_is_the_min_over_the_chosen_subset() -> None:
    learner = OffPolicyLearner(DIMS, 2, replace(SMALL, actor="deterministic"))
    values = [5.0, -1.0, 3.0, 0.5, 2.0]
    _constant_target_critics(learner, values)
    b = _batch()
    for members in ([0, 2], [1, 4], [3, 0]):
        want = b.reward + b.discount * min(values[i] for i in members)
        assert torch.allclose(learner.td_target(b, torch.tensor(members)), want, atol=1e-6)
    b0 = replace(b, discount=torch.zeros(64))  # terminal: no bootstrap at all
    assert torch.allclose(learner.td_target(b0, torch.tensor([0, 1])), b.reward)


def test_compose_hook_is_what_the_critic_target_scores() -> None:
    cfg = replace(SMALL, actor="deterministic", target_noise=0.0)
    torch.manual_seed(0)
    plain = OffPolicyLearner(DIMS, 2, cfg)
    torch.manual_seed(0)
    residual = OffPolicyLearner(DIMS, 2, cfg, compose=residual_compose(0.5))
    b = _batch()
    members = torch.tensor([0, 3])
    with torch.no_grad():
        a = residual.policy(b.next_obs, sample=False)[0]
        env_a = torch.clamp(b.next_obs["base_action"] + 0.5 * a, -1, 1)
        x = torch.cat([residual.critic_input(b.next_obs), env_a], -1)
        want = b.reward + b.discount * residual.critic_target(x, members).squeeze(-1).amin(0)
    got = residual.td_target(b, members)
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, plain.td_target(b, members), atol=1e-3)
    assert torch.allclose(residual.act(b.obs, deterministic=True),
                          torch.clamp(b.obs["base_action"] + 0.5 * residual.policy(b.obs, sample=False)[0], -1, 1))


@pytest.mark.parametrize("kind", ["deterministic", "stochastic"])
def test_zero_init_actor_starts_at_the_base_policy(kind: str) -> None:
    cfg = replace(SMALL, actor=kind, zero_init_actor=True)
    learner = OffPolicyLearner(DIMS, 2, cfg, compose=residual_compose(0.3))
    obs = _batch().obs
    assert torch.equal(learner.act(obs, deterministic=True), obs["base_action"])
    # A pre-built actor (e.g. a behaviour-cloning network) is zero-initialised the same way.
    bc = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2 if kind == "deterministic" else 4))
    learner = OffPolicyLearner(DIMS, 2, cfg, compose=residual_compose(0.3), actor=bc)
    assert learner.actor is bc
    assert torch.equal(learner.act(obs, deterministic=True), obs["base_action"])


def test_critic_warmup_keeps_the_actor_fixed() -> None:
    learner = OffPolicyLearner(DIMS, 2, replace(SMALL, critic_warmup_updates=3))
    actor0 = [p.detach().clone() for p in learner.actor.parameters()]
    critic0 = [p.detach().clone() for p in learner.critic.parameters()]
    for i in range(3):
        metrics = learner.update(_batch(seed=i))
        assert "actor_loss" not in metrics
    assert all(torch.equal(a, b) for a, b in zip(actor0, learner.actor.parameters(), strict=True))
    assert not torch.equal(critic0[0], learner.critic.linears[0].weight)
    assert "actor_loss" in learner.update(_batch(seed=3))
    assert not all(torch.equal(a, b) for a, b in zip(actor0, learner.actor.parameters(), strict=True))


def test_non_finite_loss_raises_before_any_step() -> None:
    learner = OffPolicyLearner(DIMS, 2, SMALL)
    before = [p.detach().clone() for p in learner.critic.parameters()]
    b = _batch()
    b.reward[3] = float("nan")
    with pytest.raises(NonFiniteLossError, match="critic loss") as err:
        learner.update(b)
    assert err.value.loss_name == "critic"
    assert all(torch.equal(a, p) for a, p in zip(before, learner.critic.parameters(), strict=True))


@pytest.mark.parametrize("kind", ["deterministic", "stochastic"])
def test_state_dict_round_trip(kind: str) -> None:
    cfg = replace(SMALL, actor=kind, policy_delay=2)
    stats = {"policy": (np.array([0.1, 0.2, 0.3]), np.array([1.0, 2.0, 3.0]))}
    torch.manual_seed(0)
    a = OffPolicyLearner(DIMS, 2, cfg, obs_stats=stats)
    for i in range(3):
        a.update(_batch(seed=i))
    blob = io.BytesIO()
    torch.save(a.state_dict(), blob)
    b = OffPolicyLearner(DIMS, 2, cfg)
    b.load_state_dict(torch.load(io.BytesIO(blob.getvalue()), weights_only=False))
    assert b.updates == 3 and torch.equal(a.log_alpha, b.log_alpha)
    torch.manual_seed(1)
    ma = a.update(_batch(seed=9))
    torch.manual_seed(1)
    mb = b.update(_batch(seed=9))
    assert ma == mb
    for x, y in ((a.actor, b.actor), (a.critic, b.critic), (a.critic_target, b.critic_target)):
        assert all(torch.equal(p, q) for p, q in zip(x.state_dict().values(), y.state_dict().values(), strict=True))


class PointMass:
    """2-D point mass driven to a random goal; reward -distance; 25-step episodes cut by the time limit."""

    horizon = 25

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.rng = n, np.random.default_rng(seed)
        self.pos, self.goal, self.t = np.zeros((n, 2)), np.zeros((n, 2)), np.zeros(n, int)
        self._reset(np.arange(n))

    def obs(self) -> dict[str, np.ndarray]:
        return {"policy": np.concatenate([self.pos, self.goal], 1).astype(np.float32)}

    def _reset(self, idx: np.ndarray) -> None:
        self.pos[idx] = self.rng.uniform(-1, 1, (len(idx), 2))
        self.goal[idx] = self.rng.uniform(-1, 1, (len(idx), 2))
        self.t[idx] = 0

    def step(self, action: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict]:
        self.pos = np.clip(self.pos + 0.15 * np.clip(action, -1, 1), -1.5, 1.5)
        reward = -np.linalg.norm(self.pos - self.goal, axis=1).astype(np.float32)
        self.t += 1
        truncated = self.t >= self.horizon
        final = self.obs()
        self._reset(np.flatnonzero(truncated))
        return self.obs(), reward, np.zeros(self.n, bool), truncated, final


def _evaluate(learner: OffPolicyLearner, episodes: int = 64) -> float:
    env = PointMass(episodes, seed=123)
    ret = np.zeros(episodes)
    for _ in range(env.horizon):
        _, r, *_ = env.step(learner.act(env.obs(), deterministic=True).numpy())
        ret += r
    return float(ret.mean())


@pytest.mark.parametrize("kind", ["deterministic", "stochastic"])
def test_learns_point_mass_reaching(kind: str) -> None:
    torch.manual_seed(0)
    cfg = OffPolicyConfig(actor=kind, actor_hidden=(64, 64), critic_hidden=(64, 64), num_critics=4, batch_size=128,
                          gamma=0.9, n_step=3, actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3, init_alpha=0.1, tau=0.01)
    learner = OffPolicyLearner({"policy": 4}, 2, cfg)
    untrained = _evaluate(learner)
    n = 8
    env, buf = PointMass(n, seed=0), ReplayBuffer({"policy": 4}, 2, capacity=20_000, num_envs=n)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    obs = env.obs()
    for step in range(800):
        action = rng.uniform(-1, 1, (n, 2)) if step < 50 else learner.act(obs).numpy()
        next_obs, reward, terminated, truncated, final = env.step(action)
        buf.add(obs, action, reward, final, terminated, truncated)
        obs = next_obs
        if step >= 50:
            learner.update_from(buf, generator=gen)
    trained = _evaluate(learner)
    # Untrained: about -34 (drifts away); reaching the goal and staying there: about -4.
    assert trained > untrained + 20 and trained > -10, (untrained, trained)


def test_stochastic_log_prob_is_the_tanh_gaussian_density() -> None:
    learner = OffPolicyLearner(DIMS, 2, SMALL)
    obs = _batch().obs
    torch.manual_seed(5)
    with torch.no_grad():
        a, logp = learner.policy(obs, sample=True)
        mean, raw_log_std = learner.actor(learner.actor_input(obs)).chunk(2, -1)
    lo, hi = SMALL.log_std_min, SMALL.log_std_max
    std = (lo + 0.5 * (hi - lo) * (torch.tanh(raw_log_std) + 1)).exp()
    dist = torch.distributions.TransformedDistribution(torch.distributions.Normal(mean, std),
                                                       [torch.distributions.TanhTransform()])
    a = a.clamp(-1 + 1e-6, 1 - 1e-6)
    assert torch.allclose(logp, dist.log_prob(a).sum(-1), atol=1e-3)


def test_actor_penalty_holds_the_actor_nearer_its_start() -> None:
    """Same data, same seed: the penalised actor moves less far from its zero start."""
    def drift(cfg: OffPolicyConfig) -> float:
        torch.manual_seed(0)
        learner = OffPolicyLearner(DIMS, 2, replace(cfg, zero_init_actor=True, actor="deterministic"))
        for i in range(60):
            learner.update(_batch(seed=i))
        with torch.no_grad():
            a, _ = learner.policy(_batch(seed=99).obs, sample=False)
        return float(a.abs().mean())

    assert drift(replace(SMALL, actor_penalty=5.0)) < 0.8 * drift(SMALL)


def test_actor_pessimism_subtracts_the_ensemble_spread() -> None:
    torch.manual_seed(0)
    plain = OffPolicyLearner(DIMS, 2, replace(SMALL, actor="deterministic"))
    pessimistic = OffPolicyLearner(DIMS, 2, replace(SMALL, actor="deterministic", actor_pessimism=2.0))
    pessimistic.actor.load_state_dict(plain.actor.state_dict())
    pessimistic.critic.load_state_dict(plain.critic.state_dict())
    obs = _batch(seed=5).obs
    with torch.no_grad():
        a, _ = plain.policy(obs, sample=False)
        qs = plain.critic(torch.cat([plain.critic_input(obs), a], dim=-1)).squeeze(-1)
        gap = pessimistic._actor_loss_eager(obs, plain.alpha)[0] - plain._actor_loss_eager(obs, plain.alpha)[0]
    torch.testing.assert_close(gap, 2.0 * qs.std(0).mean())


def test_compile_failing_at_its_first_call_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile only compiles at the first call (no C++ compiler shows there): the learner goes on eagerly."""

    def broken_compile(fn: object, **kwargs: object) -> object:
        def call(*args: object, **kw: object) -> object:
            raise RuntimeError("no working C++ compiler")

        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    learner = OffPolicyLearner(DIMS, 2, replace(SMALL, actor="deterministic", policy_delay=1, compile=True))
    assert learner.compiled
    with pytest.warns(UserWarning, match="runs eagerly"):
        metrics = learner.update(_batch())
    assert not learner.compiled and np.isfinite(metrics["critic_loss"]) and "actor_loss" in metrics
    learner.update(_batch(seed=1))  # eager from now on: no second warning, no error


def test_compiled_loss_errors_after_a_working_call_are_raised() -> None:
    from s2r.policies.compiled import CompiledOrEager

    calls = iter([1.0])

    def compiled() -> float:
        return next(calls)  # works once, then StopIteration: a failure that is not the compiler's

    learner = type("L", (), {"compiled": True})()
    fn = CompiledOrEager(compiled, lambda: 2.0, learner)
    assert fn() == 1.0
    with pytest.raises(StopIteration):
        fn()
    assert learner.compiled
