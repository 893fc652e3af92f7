"""Rollout storage for on-policy algorithms, with GAE."""

from __future__ import annotations

from collections.abc import Iterator

import torch


class RolloutStorage:
    """Fixed-size (steps, num_envs, ...) buffers filled by the runner, read as shuffled minibatches."""

    def __init__(self, steps: int, num_envs: int, actor_dim: int, critic_dim: int, action_dim: int,
                 device: torch.device | str | None = None) -> None:
        self.steps, self.num_envs = steps, num_envs
        self.device = torch.device(device or "cpu")

        def z(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, device=self.device)

        self.actor_obs = z(steps, num_envs, actor_dim)
        self.critic_obs = z(steps, num_envs, critic_dim)
        self.actions = z(steps, num_envs, action_dim)
        self.log_probs = z(steps, num_envs)
        self.mu = z(steps, num_envs, action_dim)
        self.sigma = z(steps, num_envs, action_dim)
        self.rewards = z(steps, num_envs)
        self.dones = z(steps, num_envs)
        self.values = z(steps, num_envs)
        self.returns = z(steps, num_envs)
        self.advantages = z(steps, num_envs)
        self.step = 0

    def add(self, actor_obs: torch.Tensor, critic_obs: torch.Tensor, actions: torch.Tensor,
            log_probs: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, rewards: torch.Tensor,
            dones: torch.Tensor, values: torch.Tensor) -> None:
        """Store one control step for every env."""
        if self.step >= self.steps:
            raise RuntimeError("rollout storage is full; call clear() after each update")
        i = self.step
        self.actor_obs[i] = actor_obs
        self.critic_obs[i] = critic_obs
        self.actions[i] = actions
        self.log_probs[i] = log_probs
        self.mu[i] = mu
        self.sigma[i] = sigma
        self.rewards[i] = rewards
        self.dones[i] = dones
        self.values[i] = values
        self.step += 1

    def clear(self) -> None:
        """Start a new rollout."""
        self.step = 0

    def compute_returns(self, last_values: torch.Tensor, gamma: float, lam: float) -> None:
        """Generalised advantage estimation; advantages are normalised over the whole batch."""
        adv = torch.zeros(self.num_envs, device=self.device)
        for t in reversed(range(self.steps)):
            next_v = last_values if t == self.steps - 1 else self.values[t + 1]
            notdone = 1.0 - self.dones[t]
            delta = self.rewards[t] + gamma * next_v * notdone - self.values[t]
            adv = delta + gamma * lam * notdone * adv
            self.advantages[t] = adv
        self.returns = self.advantages + self.values
        a = self.advantages
        self.advantages = (a - a.mean()) / (a.std() + 1e-8)

    def minibatches(self, num_minibatches: int, epochs: int,
                    generator: torch.Generator | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Yield shuffled flat minibatches for `epochs` passes."""
        n = self.steps * self.num_envs
        size = n // num_minibatches
        flat = {
            "actor_obs": self.actor_obs.flatten(0, 1),
            "critic_obs": self.critic_obs.flatten(0, 1),
            "actions": self.actions.flatten(0, 1),
            "log_probs": self.log_probs.flatten(),
            "mu": self.mu.flatten(0, 1),
            "sigma": self.sigma.flatten(0, 1),
            "values": self.values.flatten(),
            "returns": self.returns.flatten(),
            "advantages": self.advantages.flatten(),
        }
        for _ in range(epochs):
            perm = torch.randperm(n, generator=generator, device=self.device)
            for k in range(num_minibatches):
                idx = perm[k * size : (k + 1) * size]
                yield {key: v[idx] for key, v in flat.items()}
