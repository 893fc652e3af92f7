"""Off-policy actor-critic core shared by residual RL, HIL-SERL and later methods.

One learner, two actor kinds:

- `actor="stochastic"` (SAC): tanh-squashed Gaussian, entropy temperature tuned towards -|A|.
- `actor="deterministic"` (TD3): tanh output, Gaussian exploration noise, target policy smoothing, policy delay.

Shared recipes (REDQ / RLPD): LayerNorm in actor and critics; an ensemble of critics evaluated as one
batched matmul; the TD target is the min over a random subset of target critics; n-step returns come from
the replay buffer (`Batch.discount` already holds gamma^k (1 - terminated)); soft target updates; several
updates per collected transition (`utd_ratio`). There is no target actor: the next action comes from the current actor,
as in SAC and REDQ.

Hooks for methods built on top:

- `compose(actor_out, obs) -> env_action` maps the actor's output (in [-1, 1]) to the action the env gets
  and the critic scores; the buffer stores env actions. Residual RL uses `residual_compose`.
- `zero_init_actor` starts training exactly at `compose(0, obs)` (the base policy, for residual RL).
- `critic_warmup_updates` keeps the actor fixed while the critics first fit.
- `actor=` takes a pre-built actor module (full fine-tuning of a behaviour-cloning network).

Learning from pixels (DrQ, as SERL's image agent), when `encoder.image_groups` names image groups: one conv
encoder per camera (`s2r.policies.encoders`), its features put before the vector groups of both actor and critics.
The encoder is the critics': the critic optimiser steps it with the critic loss. The actor reads its features
with the gradient stopped, so the actor loss never moves it. The target critics read a target encoder, a soft
(EMA) copy updated with the target critics: an online encoder there would move the bootstrap target with every
critic step, which is what target networks exist to prevent (DrQ keeps one too). Replay batches get
random-shift augmentation (obs and next obs independently); acting and the exported graph see frames as they are.
The actor step reuses the features the critic step computed (before the critic stepped), as SERL's joint update
does, which saves one encoder pass per update.

The config and the action hooks are in `s2r.policies.offpolicy_config` (re-exported here). Reads top to
bottom: learner construction, `act` (collect), `update` (critic, actor, temperature,
targets), persistence.
"""

from __future__ import annotations

import copy
import ctypes
import math
from collections.abc import Mapping

import numpy as np
import torch
from s2r.policies.compiled import CompiledOrEager, warn_eager
from s2r.policies.encoders import PixelEncoder, augment, image_shapes
from s2r.policies.networks import EnsembleMLP, mlp
from s2r.policies.offpolicy_config import (
    Compose,
    NonFiniteLossError,
    OffPolicyConfig,
    identity_compose,
    residual_compose,
)
from s2r.policies.replay import Batch, ReplayBuffer, sample_mixed
from torch import nn

__all__ = ["Compose", "ExportedActor", "NonFiniteLossError", "OffPolicyConfig", "OffPolicyLearner",
           "filter_keep", "identity_compose", "keep_freed_memory", "residual_compose"]

class OffPolicyLearner:
    """Actor + critic ensemble + target critics + optimisers; `act` for collection, `update` for learning.

    Args:
        obs_dims: observation group -> dim, or shape (as `env.obs_shapes`); the groups it reads must be vectors.
        action_dim: env action size.
        cfg: hyper-parameters.
        compose: maps (actor output, raw obs) to the env action; default identity.
        actor: pre-built actor module mapping the concatenated (normalised) actor groups to `action_dim`
            outputs (deterministic; tanh is applied) or `2 * action_dim` (stochastic: mean, log-std pre-tanh).
        obs_stats: fixed normalisation, group -> (mean, std); groups left out are not normalised.
        device: where the networks live; batches are moved there.
        obs_dtypes: group -> "float32" (default) or "uint8"; groups it does not read may be anything.

    Raises:
        ValueError: a group it reads is missing; a vector group is not a float32 vector; an encoder group is
            not a uint8 (H, W, C) image.
    """

    def __init__(self, obs_dims: Mapping[str, int | tuple[int, ...]], action_dim: int, cfg: OffPolicyConfig, *,
                 compose: Compose | None = None, actor: nn.Module | None = None,
                 obs_stats: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
                 device: str | torch.device = "cpu", obs_dtypes: Mapping[str, str] | None = None) -> None:
        dims = _vector_dims(type(self).__name__, obs_dims, obs_dtypes or {}, (*cfg.actor_obs, *cfg.critic_obs))
        images = image_shapes(obs_dims, obs_dtypes or {}, cfg.encoder.image_groups)
        self.cfg = cfg
        self.device = torch.device(device)
        self.action_dim = action_dim
        self.compose = compose or identity_compose
        self.stochastic = cfg.actor == "stochastic"
        self.image_groups = cfg.encoder.image_groups
        self.encoder = PixelEncoder(images, cfg.encoder).to(self.device) if images else None
        self.encoder_target = copy.deepcopy(self.encoder).requires_grad_(False) if self.encoder else None
        features = self.encoder.out_dim if self.encoder else 0
        self.vector_dims = {g: dims[g] for g in cfg.actor_obs}  # the actor's vector inputs, in order (export)
        actor_dim = features + sum(dims[g] for g in cfg.actor_obs)
        critic_dim = features + sum(dims[g] for g in cfg.critic_obs)
        out = 2 * action_dim if self.stochastic else action_dim
        self.actor = actor if actor is not None else mlp(actor_dim, cfg.actor_hidden, out, cfg.activation, cfg.layer_norm)
        if cfg.zero_init_actor:
            last = [m for m in self.actor.modules() if isinstance(m, nn.Linear)][-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.critic = EnsembleMLP(cfg.num_critics, critic_dim + action_dim, cfg.critic_hidden, 1, cfg.activation,
                                  cfg.layer_norm)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor.to(self.device)
        self.critic.to(self.device)
        self.critic_target.to(self.device)
        self.actor_norm = _normalizer(cfg.actor_obs, dims, obs_stats, self.device)
        self.critic_norm = _normalizer(cfg.critic_obs, dims, obs_stats, self.device)
        self.actor_optimizer = _adam(self.actor.parameters(), cfg.actor_lr)
        encoder_params = list(self.encoder.parameters()) if self.encoder else []
        self.critic_optimizer = _adam([*self.critic.parameters(), *encoder_params], cfg.critic_lr)
        self.log_alpha = torch.tensor(math.log(cfg.init_alpha), device=self.device, requires_grad=True)
        self.alpha_optimizer = _adam([self.log_alpha], cfg.alpha_lr)
        self.target_entropy = float(-action_dim if cfg.target_entropy is None else cfg.target_entropy)
        self.updates = 0
        self.last_filter_keep = 1.0  # fraction of the last `act` batch the Q-filter kept (1 without a filter)
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())
        self._encoder_params = encoder_params
        self._encoder_target_params = list(self.encoder_target.parameters()) if self.encoder_target else []
        self._critic_loss = self._critic_loss_eager
        self._actor_loss = self._actor_loss_eager
        self.compiled = False
        if cfg.keep_freed_memory and self.device.type == "cpu":
            keep_freed_memory()
        if cfg.compile:
            self._compile()

    # ---- observations and the policy -----------------------------------------------------------------------

    def features(self, obs: Mapping[str, torch.Tensor], target: bool = False) -> torch.Tensor | None:
        """(batch, encoder.out_dim) image features from the online (or target) encoder; None without an encoder."""
        if self.encoder is None:
            return None
        return (self.encoder_target if target else self.encoder)(obs)

    def _input(self, obs: Mapping[str, torch.Tensor], groups: tuple[str, ...],
               norm: tuple[torch.Tensor, torch.Tensor] | None, features: torch.Tensor | None) -> torch.Tensor:
        parts = [_apply_norm(torch.cat([obs[g] for g in groups], dim=-1), norm)] if groups else []
        return torch.cat(parts if features is None else [features, *parts], dim=-1)

    def actor_input(self, obs: Mapping[str, torch.Tensor], features: torch.Tensor | None = None) -> torch.Tensor:
        """Image features (detached; computed here if not given) then the normalised actor groups, (batch, actor_dim)."""
        if self.encoder is not None:
            if features is None:
                with torch.no_grad():
                    features = self.features(obs)
            features = features.detach()  # the actor never trains the encoder (DrQ)
        return self._input(obs, self.cfg.actor_obs, self.actor_norm, features)

    def critic_input(self, obs: Mapping[str, torch.Tensor], features: torch.Tensor | None = None) -> torch.Tensor:
        """Image features (as given, or online without gradient) then the normalised critic groups, (batch, critic_dim)."""
        if self.encoder is not None and features is None:
            with torch.no_grad():
                features = self.features(obs)
        return self._input(obs, self.cfg.critic_obs, self.critic_norm, features)

    def policy(self, obs: Mapping[str, torch.Tensor], sample: bool, features: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Actor output in [-1, 1] and, for the stochastic actor, its log-probability (batch,).

        `sample=False` gives the deterministic action (tanh of the mean) and no log-probability. `features` are
        the image features of `obs` if already computed (they are detached here).
        """
        raw = self.actor(self.actor_input(obs, features))
        if not self.stochastic:
            return torch.tanh(raw), None
        mean, log_std = raw.chunk(2, dim=-1)
        if not sample:
            return torch.tanh(mean), None
        # Smooth squash of the log-std into its range (SAC/DrQ): no dead gradient at a hard clamp.
        lo, hi = self.cfg.log_std_min, self.cfg.log_std_max
        log_std = lo + 0.5 * (hi - lo) * (torch.tanh(log_std) + 1.0)
        eps = torch.randn_like(mean)
        u = mean + log_std.exp() * eps
        # log N(u) - log|d tanh(u)/du|, the latter written stably as 2 (log 2 - u - softplus(-2u)).
        logp = (-0.5 * eps.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - (2.0 * (math.log(2.0) - u - nn.functional.softplus(-2.0 * u))).sum(-1)
        return torch.tanh(u), logp

    @torch.no_grad()
    def act(self, obs: Mapping[str, torch.Tensor | np.ndarray], deterministic: bool = False,
            filtered: bool = True) -> torch.Tensor:
        """Env actions (batch, action_dim) for collection (`deterministic=False`) or evaluation.

        With `cfg.q_filter` set (and `filtered`), the actor's output is replaced by 0 (the anchor: the base
        action of a residual learner) where the critics are not confident it is better; `last_filter_keep`
        then holds the fraction kept. The critic's groups must be in `obs`.
        """
        # Images stay uint8 (the encoder scales them); vectors become float32.
        obs = {g: torch.as_tensor(v, device=self.device) if g in self.image_groups
               else torch.as_tensor(v, dtype=torch.float32, device=self.device) for g, v in obs.items()}
        a, _ = self.policy(obs, sample=not deterministic)
        if filtered and self.cfg.q_filter is not None:
            keep = self.qfilter_keep(obs, a)
            a = torch.where(keep[:, None], a, torch.zeros_like(a))
            self.last_filter_keep = float(keep.float().mean())
        if not deterministic and not self.stochastic:
            a = (a + self.cfg.exploration_noise * torch.randn_like(a)).clamp(-1.0, 1.0)
        return self.compose(a, obs)

    def q_pair(self, obs: Mapping[str, torch.Tensor], a: torch.Tensor, features: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, batch) Q of every critic at compose(a) and at the anchor compose(0), in one batched pass."""
        x = self.critic_input(obs, features)
        both = torch.cat([torch.cat([x, self.compose(a, obs)], dim=-1),
                          torch.cat([x, self.compose(torch.zeros_like(a), obs)], dim=-1)])
        q = self.critic(both).squeeze(-1)  # (E, 2 * batch)
        return q[:, : len(a)], q[:, len(a):]

    @torch.no_grad()
    def qfilter_keep(self, obs: Mapping[str, torch.Tensor], a: torch.Tensor,
                      features: torch.Tensor | None = None) -> torch.Tensor:
        """(batch,) bool: the critics' paired lower bound favours actor output `a` over the anchor (see `q_filter`)."""
        q_a, q_0 = self.q_pair(obs, a, features)
        return filter_keep(q_a - q_0, self.cfg.q_filter or 0.0)

    @property
    def alpha(self) -> torch.Tensor:
        """Entropy temperature (0-dim tensor)."""
        return self.log_alpha.detach().exp()

    # ---- learning ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def td_target(self, batch: Batch, members: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
        """(batch,) n-step TD target: reward + discount * (min over target critics `members` of Q(s', a') [- alpha logp]).

        a' is the current actor's action at the bootstrap observation (smoothed with clipped noise for the
        deterministic actor), mapped through `compose` like every action the critic sees.
        """
        cfg = self.cfg
        a, logp = self.policy(batch.next_obs, sample=True)  # online encoder features (no gradient in here)
        if not self.stochastic:
            # Target policy smoothing (TD3): the target is averaged over nearby actions.
            noise = (cfg.target_noise * torch.randn_like(a)).clamp(-cfg.target_noise_clip, cfg.target_noise_clip)
            a = (a + noise).clamp(-1.0, 1.0)
        target_features = self.features(batch.next_obs, target=True)
        x = torch.cat([self.critic_input(batch.next_obs, target_features), self.compose(a, batch.next_obs)], dim=-1)
        next_q = self.critic_target(x, members).squeeze(-1).amin(0)  # (batch,)
        if logp is not None:
            next_q = next_q - (self.alpha if alpha is None else alpha) * logp
        return batch.reward + batch.discount * next_q

    def _critic_loss_eager(self, batch: Batch, members: torch.Tensor, alpha: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        target = self.td_target(batch, members, alpha)
        features = self.features(batch.obs)  # with gradient: the critic loss trains the encoder
        q = self.critic(torch.cat([self.critic_input(batch.obs, features), batch.action], dim=-1)).squeeze(-1)  # (E, batch)
        # Each member regresses on the same target: the sum keeps every member's gradient its own MSE gradient.
        loss = (q - target).square().mean(1).sum()
        return loss, q.detach().mean(), None if features is None else features.detach()

    def _actor_loss_eager(self, obs: Mapping[str, torch.Tensor], alpha: torch.Tensor,
                          features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        features = None if features is None else features.detach()  # the actor loss never reaches the encoder
        a, logp = self.policy(obs, sample=True, features=features)
        bc = self.cfg.q_filter_bc if self.cfg.q_filter is not None else 0.0
        if bc > 0.0:
            qs, q_0 = self.q_pair(obs, a, features)  # (E, batch) each; the anchor's Q carries no actor gradient
        else:
            qs = self.critic(torch.cat([self.critic_input(obs, features), self.compose(a, obs)], dim=-1)).squeeze(-1)
        q = qs.mean(0) if self.cfg.actor_q == "mean" else qs.amin(0)
        if self.cfg.actor_pessimism > 0.0:
            q = q - self.cfg.actor_pessimism * qs.std(0)
        if self.cfg.actor_penalty > 0.0:
            q = q - self.cfg.actor_penalty * a.square().mean(-1)
        if bc > 0.0:
            # Q-filtered BC towards output 0: only where the filter would reject this action.
            reject = ~filter_keep((qs - q_0).detach(), self.cfg.q_filter)
            q = q - bc * reject.float() * a.square().mean(-1)
        if logp is None:
            return -q.mean(), torch.zeros((), device=q.device)
        return (alpha * logp - q).mean(), logp.detach()

    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step of the critics and, when due, of the actor and temperature; soft target update.

        Returns:
            `critic_loss` (per member), `q_mean`, and when the actor stepped `actor_loss` (+ `entropy`);
            `alpha` for the stochastic actor.

        Raises:
            NonFiniteLossError: a loss is NaN/inf; nothing was stepped with it.
        """
        cfg = self.cfg
        if batch.action.device != self.device:
            batch = _to(batch, self.device)
        if self.encoder is not None and cfg.encoder.pad:
            batch = augment(batch, self.image_groups, cfg.encoder.pad)
        alpha = self.alpha
        members = torch.randperm(cfg.num_critics, device=self.device)[: cfg.critic_subset]
        critic_loss, q_mean, features = self._critic_loss(batch, members, alpha)
        self._step(self.critic_optimizer, critic_loss, "critic", self._critic_params)
        metrics = {"critic_loss": critic_loss.detach() / cfg.num_critics, "q_mean": q_mean}

        if self.updates >= cfg.critic_warmup_updates and self.updates % cfg.policy_delay == 0:
            # The critic is only a function of the action here: no weight gradients for it.
            self.critic.requires_grad_(False)
            try:
                actor_loss, logp = self._actor_loss(batch.obs, alpha, features)
            finally:
                self.critic.requires_grad_(True)
            self._step(self.actor_optimizer, actor_loss, "actor", self.actor.parameters())
            metrics["actor_loss"] = actor_loss.detach()
            if self.stochastic:
                alpha_loss = -(self.log_alpha * (logp + self.target_entropy)).mean()
                self._step(self.alpha_optimizer, alpha_loss, "alpha", None)
                metrics["entropy"] = -logp.mean()
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._critic_params, cfg.tau)
            if self._encoder_params:  # the target encoder moves with the target critics it feeds
                torch._foreach_lerp_(self._encoder_target_params, self._encoder_params, cfg.tau)
        self.updates += 1
        if self.stochastic:
            metrics["alpha"] = self.alpha
        # One conversion for all metrics instead of a .item() per value.
        values = torch.stack([v.float() for v in metrics.values()]).tolist()
        return dict(zip(metrics.keys(), values, strict=True))

    def update_from(self, online: ReplayBuffer, demo: ReplayBuffer | None = None, num_updates: int | None = None,
                    generator: torch.Generator | None = None) -> dict[str, float]:
        """Draw `num_updates` (default `utd_ratio`) batches (half from `demo` if given) and update on each.

        Returns the metrics of the last update.
        """
        cfg = self.cfg
        metrics: dict[str, float] = {}
        for _ in range(num_updates or max(1, round(cfg.utd_ratio))):
            batch = sample_mixed(online, demo, cfg.batch_size, cfg.n_step, cfg.gamma, generator, cfg.demo_fraction)
            metrics = self.update(batch)
        return metrics

    def _step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, name: str, params: object) -> None:
        # Checked before the step, so a NaN never reaches the weights the runner would save.
        if not torch.isfinite(loss):
            raise NonFiniteLossError(name, self.updates)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if params is not None and self.cfg.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)
        optimizer.step()

    def _compile(self) -> None:
        """torch.compile the two loss functions; on any failure keep eager mode (with a warning).

        torch.compile itself returns at once: the compiler runs at the first call, so a missing C++ compiler or
        an unsupported op only shows there. Each loss therefore falls back to eager if its first call fails.
        """
        try:
            self._critic_loss = CompiledOrEager(torch.compile(self._critic_loss_eager, dynamic=False),
                                                self._critic_loss_eager, self)
            self._actor_loss = CompiledOrEager(torch.compile(self._actor_loss_eager, dynamic=False),
                                               self._actor_loss_eager, self)
            self.compiled = True
        except Exception as exc:
            warn_eager(exc)
            self._critic_loss, self._actor_loss = self._critic_loss_eager, self._actor_loss_eager

    # ---- persistence ---------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Networks, target critics, optimisers, temperature and the update count: everything to resume."""
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(),
                "actor_optimizer": self.actor_optimizer.state_dict(),
                "critic_optimizer": self.critic_optimizer.state_dict(),
                "log_alpha": self.log_alpha.detach().clone(), "alpha_optimizer": self.alpha_optimizer.state_dict(),
                "actor_norm": self.actor_norm, "critic_norm": self.critic_norm, "updates": self.updates,
                **({"encoder": self.encoder.state_dict(), "encoder_target": self.encoder_target.state_dict()}
                   if self.encoder is not None else {})}

    def load_state_dict(self, state: dict) -> None:
        """Restore from `state_dict()`."""
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        self.actor_norm, self.critic_norm = state["actor_norm"], state["critic_norm"]
        self.updates = int(state["updates"])
        if self.encoder is not None:
            if "encoder" not in state:
                raise ValueError("the checkpoint has no image encoder but this learner encodes "
                                 f"{list(self.image_groups)}; resume with the encoder settings it was trained with")
            self.encoder.load_state_dict(state["encoder"])
            self.encoder_target.load_state_dict(state["encoder_target"])


class ExportedActor(nn.Module):
    """The learner's deterministic action in [-1, 1] with its input normaliser (and image encoder) inside.

    Its inputs are the actor's groups in `actor_obs` order, as separate tensors (e.g. obs and the base action of
    residual RL), then one uint8 (B, H, W, C) tensor per image group in `encoder.image_groups` order; a stochastic
    actor exports tanh of its mean. A copy: later updates do not change it.
    """

    def __init__(self, learner: OffPolicyLearner) -> None:
        super().__init__()
        self.actor = copy.deepcopy(learner.actor).cpu().eval()
        self.encoder = copy.deepcopy(learner.encoder).cpu().eval() if learner.encoder is not None else None
        self.image_groups = learner.image_groups
        self.num_vectors = len(learner.cfg.actor_obs)
        self.action_dim = learner.action_dim
        width = sum(learner.vector_dims.values())
        norm = learner.actor_norm
        self.register_buffer("mean", norm[0].detach().cpu().clone() if norm is not None else torch.zeros(width))
        self.register_buffer("inv_std", norm[1].detach().cpu().clone() if norm is not None else torch.ones(width))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        vectors, images = inputs[: self.num_vectors], inputs[self.num_vectors:]
        parts = []
        if self.encoder is not None:
            parts.append(self.encoder(dict(zip(self.image_groups, images, strict=True))))
        if vectors:
            x = vectors[0] if len(vectors) == 1 else torch.cat(vectors, dim=-1)
            parts.append((x - self.mean) * self.inv_std)
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        return torch.tanh(self.actor(x)[..., : self.action_dim])


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory mapped instead of handing it back to the OS (process-wide).

    PyTorch's CPU allocator does not cache: every activation of every update is malloc'ed and freed. glibc
    serves blocks above its mmap threshold with fresh mmaps and unmaps them on free, so each update
    page-faults megabytes back in; for ensemble-sized tensors that costs as much as the arithmetic. Raising
    the mmap and trim thresholds lets the heap reuse those pages (the process keeps its peak heap size).

    Returns:
        True if applied; False where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from malloc.h
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def _vector_dims(learner: str, obs_dims: Mapping[str, int | tuple[int, ...]], obs_dtypes: Mapping[str, str],
                 groups: tuple[str, ...]) -> dict[str, int]:
    """Width of each group the learner reads; a missing group or one that is not a float32 vector is refused."""
    dims = {}
    for g in dict.fromkeys(groups):
        if g not in obs_dims:
            raise ValueError(f"observation group '{g}' is not provided by the env (it has {sorted(obs_dims)})")
        spec = obs_dims[g]
        shape = (int(spec),) if isinstance(spec, int | np.integer) else tuple(int(v) for v in spec)
        dtype = str(obs_dtypes.get(g, "float32"))
        if len(shape) != 1 or dtype != "float32":
            raise ValueError(f"{learner} reads vector observations only; group '{g}' is {shape} {dtype} — drop it "
                             "from actor_obs/critic_obs or use an image encoder")
        dims[g] = shape[0]
    return dims


def _normalizer(groups: tuple[str, ...], obs_dims: Mapping[str, int],
                stats: Mapping[str, tuple[np.ndarray, np.ndarray]] | None,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(mean, 1/std) over the concatenated groups, or None when no group has statistics."""
    if not stats or not any(g in stats for g in groups):
        return None
    means, inv = [], []
    for g in groups:
        m, s = stats.get(g, (np.zeros(obs_dims[g]), np.ones(obs_dims[g])))
        means.append(torch.as_tensor(m, dtype=torch.float32).reshape(obs_dims[g]))
        inv.append(1.0 / torch.as_tensor(s, dtype=torch.float32).reshape(obs_dims[g]).clamp_min(1e-6))
    return torch.cat(means).to(device), torch.cat(inv).to(device)


def filter_keep(d: torch.Tensor, k: float) -> torch.Tensor:
    """(batch,) bool from per-head advantages d (E, batch): mean - k * (unbiased) std over the heads > 0.

    The std is written out rather than `d.std(0)`, so the exported graph (`FilteredResidual`) runs these very ops
    in ONNX and decides exactly as training did."""
    mean = d.mean(0)
    std = torch.sqrt((d - mean).square().sum(0) / (d.shape[0] - 1))
    return mean - k * std > 0.0


def _apply_norm(x: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    return x if norm is None else (x - norm[0]) * norm[1]


def _adam(params: object, lr: float) -> torch.optim.Adam:
    # fused: one kernel for the whole parameter list (the ensemble is a handful of large tensors).
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


def _to(batch: Batch, device: torch.device) -> Batch:
    return Batch(obs={g: v.to(device) for g, v in batch.obs.items()}, action=batch.action.to(device),
                 reward=batch.reward.to(device), next_obs={g: v.to(device) for g, v in batch.next_obs.items()},
                 discount=batch.discount.to(device))
