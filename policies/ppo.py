"""PPO: clipped surrogate, clipped value loss, GAE, and a learning rate adapted to the measured KL.

Reads top to bottom: `PPOConfig`, then `PPO.act` (collect), `PPO.process_step` (store), `PPO.update`.
The actor and critic read observation groups by name, so the critic can see the `privileged` group
(asymmetric actor-critic) while the actor sees only what the robot senses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from s2r.policies.networks import ActorCritic, ActorCriticConfig
from s2r.policies.storage import RolloutStorage
from torch import nn


@dataclass(frozen=True, kw_only=True)
class PPOConfig:
    """PPO hyper-parameters (defaults suit legged locomotion with a few hundred envs)."""

    steps_per_env: int = 24
    epochs: int = 5
    minibatches: int = 4
    gamma: float = 0.99
    lam: float = 0.95
    clip: float = 0.2
    value_clip: bool = True
    value_coef: float = 1.0
    entropy_coef: float = 0.005
    learning_rate: float = 1e-3
    schedule: str = "adaptive"  # "adaptive" (by KL) or "fixed"
    desired_kl: float = 0.01
    max_grad_norm: float = 1.0
    policy: ActorCriticConfig = field(default_factory=ActorCriticConfig)


class PPO:
    """Proximal policy optimisation over a `RolloutStorage`."""

    def __init__(self, obs_dims: dict[str, int], action_dim: int, num_envs: int, cfg: PPOConfig) -> None:
        if cfg.schedule not in ("adaptive", "fixed"):
            raise ValueError(f"PPOConfig.schedule must be 'adaptive' or 'fixed', got '{cfg.schedule}'")
        self.cfg = cfg
        self.model = ActorCritic(obs_dims, action_dim, cfg.policy)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.learning_rate)
        self.learning_rate = cfg.learning_rate
        self.storage = RolloutStorage(cfg.steps_per_env, num_envs, self.model.actor_dim, self.model.critic_dim,
                                      action_dim)
        self._pending: tuple[torch.Tensor, ...] | None = None

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sample actions for the current observations and remember what the update will need."""
        ax, cx = self.model.actor_input(obs), self.model.critic_input(obs)
        dist = self.model.distribution(ax)
        actions = dist.sample()
        self._pending = (ax, cx, actions, dist.log_prob(actions).sum(-1), dist.mean, dist.stddev,
                         self.model.value(cx))
        return actions

    @torch.no_grad()
    def process_step(self, rewards: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor,
                     final_critic_obs: torch.Tensor | None) -> None:
        """Store the step. Time-outs bootstrap with the value of the state the episode ended in."""
        if self._pending is None:
            raise RuntimeError("process_step called before act")
        ax, cx, actions, logp, mu, sigma, values = self._pending
        rewards = rewards.clone()
        if final_critic_obs is not None and truncated.any():
            idx = truncated.nonzero().squeeze(-1)
            rewards[idx] += self.cfg.gamma * self.model.value(final_critic_obs[idx])
        dones = (terminated | truncated).float()
        self.storage.add(ax, cx, actions, logp, mu, sigma, rewards, dones, values)
        self._pending = None

    @torch.no_grad()
    def compute_returns(self, obs: dict[str, torch.Tensor]) -> None:
        """GAE with the value of the observation after the last stored step."""
        last = self.model.value(self.model.critic_input(obs))
        self.storage.compute_returns(last, self.cfg.gamma, self.cfg.lam)

    def update(self) -> dict[str, float]:
        """Run the PPO epochs over the stored rollout; returns mean losses and the KL-adapted lr."""
        cfg = self.cfg
        stats = {"value_loss": 0.0, "surrogate_loss": 0.0, "entropy": 0.0, "kl": 0.0}
        n = 0
        for b in self.storage.minibatches(cfg.minibatches, cfg.epochs):
            dist = self.model.distribution(b["actor_obs"])
            logp = dist.log_prob(b["actions"]).sum(-1)
            entropy = dist.entropy().sum(-1).mean()
            with torch.no_grad():
                # KL between the Gaussians that collected the data and the current ones.
                kl = (torch.log(dist.stddev / b["sigma"])
                      + (b["sigma"] ** 2 + (b["mu"] - dist.mean) ** 2) / (2 * dist.stddev**2) - 0.5).sum(-1).mean()
            if cfg.schedule == "adaptive":
                if kl > cfg.desired_kl * 2.0:
                    self.learning_rate = max(1e-5, self.learning_rate / 1.5)
                elif 0.0 < kl < cfg.desired_kl / 2.0:
                    self.learning_rate = min(1e-2, self.learning_rate * 1.5)
                for g in self.optimizer.param_groups:
                    g["lr"] = self.learning_rate
            ratio = torch.exp(logp - b["log_probs"])
            adv = b["advantages"]
            surrogate = -torch.min(ratio * adv, torch.clamp(ratio, 1 - cfg.clip, 1 + cfg.clip) * adv).mean()
            value = self.model.value(b["critic_obs"])
            if cfg.value_clip:
                clipped = b["values"] + (value - b["values"]).clamp(-cfg.clip, cfg.clip)
                value_loss = torch.max((value - b["returns"]) ** 2, (clipped - b["returns"]) ** 2).mean()
            else:
                value_loss = ((value - b["returns"]) ** 2).mean()
            loss = surrogate + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            stats["value_loss"] += value_loss.item()
            stats["surrogate_loss"] += surrogate.item()
            stats["entropy"] += entropy.item()
            stats["kl"] += kl.item()
            n += 1
        # Normaliser statistics move once per iteration, after the update, so the policy that collected
        # a rollout is exactly the one the update's ratios and KL compare against.
        st = self.storage
        self.model.update_normalizers(st.actor_obs.flatten(0, 1), st.critic_obs.flatten(0, 1))
        self.storage.clear()
        out = {k: v / max(n, 1) for k, v in stats.items()}
        out["learning_rate"] = self.learning_rate
        out["action_std"] = self.model.log_std.exp().mean().item()
        return out

    def state_dict(self) -> dict:
        """Everything needed to resume."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "learning_rate": self.learning_rate}

    def load_state_dict(self, state: dict) -> None:
        """Restore from `state_dict()`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.learning_rate = state["learning_rate"]
