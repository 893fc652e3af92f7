"""Networks shared by every algorithm: MLPs, running observation normalisation, actor-critic."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, activation: str = "elu",
        layer_norm: bool = False) -> nn.Sequential:
    """Plain MLP: Linear (+LayerNorm) + activation per hidden layer, linear output."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{activation}'; choose from {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers.append(nn.Linear(d, h))
        if layer_norm:
            layers.append(nn.LayerNorm(h))
        layers.append(ACTIVATIONS[activation]())
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class EmpiricalNormalizer(nn.Module):
    """Running mean/variance normaliser (parallel Welford). Frozen in eval mode; exported inside ONNX."""

    def __init__(self, dim: int, eps: float = 1e-2, clip: float = 10.0) -> None:
        super().__init__()
        self.eps = eps
        self.clip = clip
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (and, in train mode, first update the statistics with) x of shape (batch, dim)."""
        if self.training:
            self.update(x)
        return torch.clamp((x - self.mean) / torch.sqrt(self.var + self.eps), -self.clip, self.clip)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge a batch into the running statistics."""
        n = x.shape[0]
        if n == 0:
            return
        bmean = x.mean(0)
        bvar = x.var(0, unbiased=False)
        total = self.count + n
        delta = bmean - self.mean
        w = float(n / total)
        self.mean += delta * w
        self.var = self.var * (1 - w) + bvar * w + delta**2 * w * (1 - w)
        self.count = total


@dataclass(frozen=True, kw_only=True)
class ActorCriticConfig:
    """Actor-critic shapes. Observation groups are chosen by name, so the critic can be asymmetric."""

    actor_obs: tuple[str, ...] = ("policy",)
    critic_obs: tuple[str, ...] = ("policy", "privileged")
    actor_hidden: tuple[int, ...] = (256, 128, 64)
    critic_hidden: tuple[int, ...] = (256, 128, 64)
    activation: str = "elu"
    init_std: float = 1.0
    normalize_obs: bool = True


class ActorCritic(nn.Module):
    """Gaussian actor with state-independent std, and a value critic on its own observation groups."""

    def __init__(self, obs_dims: dict[str, int], action_dim: int, cfg: ActorCriticConfig) -> None:
        super().__init__()
        for g in (*cfg.actor_obs, *cfg.critic_obs):
            if g not in obs_dims:
                raise ValueError(f"observation group '{g}' is not provided by the env (it has {sorted(obs_dims)})")
        self.cfg = cfg
        self.actor_dim = sum(obs_dims[g] for g in cfg.actor_obs)
        self.critic_dim = sum(obs_dims[g] for g in cfg.critic_obs)
        self.action_dim = action_dim
        self.actor_norm = EmpiricalNormalizer(self.actor_dim) if cfg.normalize_obs else nn.Identity()
        self.critic_norm = EmpiricalNormalizer(self.critic_dim) if cfg.normalize_obs else nn.Identity()
        self.actor = mlp(self.actor_dim, cfg.actor_hidden, action_dim, cfg.activation)
        self.critic = mlp(self.critic_dim, cfg.critic_hidden, 1, cfg.activation)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(torch.log(torch.tensor(cfg.init_std)))))
        # Small last actor layer: the first actions stay near the default pose.
        nn.init.orthogonal_(self.actor[-1].weight, gain=0.01)
        nn.init.zeros_(self.actor[-1].bias)

    def actor_input(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate the actor's groups."""
        return torch.cat([obs[g] for g in self.cfg.actor_obs], dim=-1)

    def critic_input(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate the critic's groups."""
        return torch.cat([obs[g] for g in self.cfg.critic_obs], dim=-1)

    def update_normalizers(self, actor_x: torch.Tensor, critic_x: torch.Tensor) -> None:
        """Feed freshly collected observations into the running statistics."""
        if isinstance(self.actor_norm, EmpiricalNormalizer):
            self.actor_norm.update(actor_x)
            self.critic_norm.update(critic_x)

    def act_mean(self, actor_x: torch.Tensor) -> torch.Tensor:
        """Deterministic action (the mean) from raw actor input."""
        return self.actor(self._norm(self.actor_norm, actor_x))

    def distribution(self, actor_x: torch.Tensor) -> torch.distributions.Normal:
        """Action distribution from raw actor input."""
        mean = self.act_mean(actor_x)
        return torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean))

    def value(self, critic_x: torch.Tensor) -> torch.Tensor:
        """(batch,) state value from raw critic input."""
        return self.critic(self._norm(self.critic_norm, critic_x)).squeeze(-1)

    @staticmethod
    def _norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # Statistics only change through update_normalizers, never as a side effect of a forward pass.
        if isinstance(norm, EmpiricalNormalizer):
            return torch.clamp((x - norm.mean) / torch.sqrt(norm.var + norm.eps), -norm.clip, norm.clip)
        return norm(x)


class EnsembleLinear(nn.Module):
    """`num_members` independent linear layers evaluated as one batched matmul (weights (E, in, out))."""

    def __init__(self, num_members: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        # Same init as nn.Linear, drawn independently for every member so the ensemble starts diverse.
        bound = 1.0 / in_dim**0.5
        self.weight = nn.Parameter(torch.empty(num_members, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        """(E, batch, in) or a shared (batch, in) -> (E, batch, out); `members` picks a subset of the E."""
        w, b = (self.weight, self.bias) if members is None else (self.weight[members], self.bias[members])
        if x.dim() == 2:
            # A shared input is broadcast without a copy; measured a little faster than one (in, E*out) GEMM.
            x = x.expand(w.shape[0], *x.shape)
        return torch.baddbmm(b, x, w)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dim with a separate affine per member, vectorised over the ensemble."""

    def __init__(self, num_members: int, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.dim = dim  # a constant shape, not x.shape[-1:], so the ONNX tracer does not turn it into a Gather
        self.weight = nn.Parameter(torch.ones(num_members, 1, dim))
        self.bias = nn.Parameter(torch.zeros(num_members, 1, dim))

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        """(E, batch, dim) -> (E, batch, dim)."""
        w, b = (self.weight, self.bias) if members is None else (self.weight[members], self.bias[members])
        return torch.addcmul(b, nn.functional.layer_norm(x, (self.dim,), eps=self.eps), w)


class EnsembleMLP(nn.Module):
    """An ensemble of same-shaped MLPs (e.g. Q critics): one batched matmul per layer, no loop over members."""

    def __init__(self, num_members: int, in_dim: int, hidden: tuple[int, ...], out_dim: int,
                 activation: str = "relu", layer_norm: bool = True) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{activation}'; choose from {sorted(ACTIVATIONS)}")
        self.num_members = num_members
        dims = (in_dim, *hidden)
        self.linears = nn.ModuleList(EnsembleLinear(num_members, dims[i], dims[i + 1]) for i in range(len(hidden)))
        self.norms = nn.ModuleList(EnsembleLayerNorm(num_members, h) for h in hidden) if layer_norm else None
        # In place for ReLU: its backward needs only the output, and it saves one (E, batch, hidden) tensor.
        self.act = nn.ReLU(inplace=True) if activation == "relu" else ACTIVATIONS[activation]()
        self.out = EnsembleLinear(num_members, dims[-1], out_dim)

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        """Shared (batch, in) or per-member (E, batch, in) -> (E, batch, out), or (len(members), batch, out)."""
        for i, lin in enumerate(self.linears):
            x = lin(x, members)
            if self.norms is not None:
                x = self.norms[i](x, members)
            x = self.act(x)
        return self.out(x, members)
