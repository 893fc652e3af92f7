"""PPO: clipped surrogate, clipped value loss, GAE, and a learning rate adapted to the measured KL.

Reads top to bottom: `PPOConfig`, then `PPO.act` (collect), `PPO.process_step` (store), `PPO.update`, then
`PPOTrainer`, the registered algorithm ("ppo") that the run driver iterates: one iteration collects
`steps_per_env` steps from every env and updates. The actor and critic read observation groups by name, so
the critic can see the `privileged` group (asymmetric actor-critic) while the actor sees only what the
robot senses.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from s2r.policies import distributed as ddp
from s2r.policies.algorithm import (
    Algorithm,
    AlgorithmTaskMismatch,
    RunContext,
    register_algorithm,
    require_vector_groups,
)
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
    # Iterations that update only the critic (a warm-started actor keeps its gait while values catch up).
    critic_warmup: int = 0
    policy: ActorCriticConfig = field(default_factory=ActorCriticConfig)


#: An extra loss added to PPO's on every minibatch: batch (storage keys) -> (loss, statistics to average).
ExtraLoss = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


class PPO:
    """Proximal policy optimisation over a `RolloutStorage`.

    `model` replaces the default `ActorCritic` with a ready-built one of the same interface (actor_input,
    critic_input, distribution, value, update_normalizers, log_std, actor_dim, critic_dim): the privileged
    teacher and the HIB student train through this class rather than a copy of it. `extra_loss` is added to
    the PPO loss of every minibatch (HIB's bottleneck and regression terms). `param_groups` (optional) splits
    the model's parameters into Adam groups, each `{"params": [...], "lr_scale": s}` stepping at s times the
    (fixed or KL-adapted) learning rate: the HIB student's actor head moves slower than its encoder.
    """

    def __init__(self, obs_dims: dict[str, int], action_dim: int, num_envs: int, cfg: PPOConfig,
                 dist: Any = None, *, model: nn.Module | None = None, extra_loss: ExtraLoss | None = None,
                 device: torch.device | str | None = None, param_groups: list[dict] | None = None) -> None:
        if cfg.schedule not in ("adaptive", "fixed"):
            raise ValueError(f"PPOConfig.schedule must be 'adaptive' or 'fixed', got '{cfg.schedule}'")
        self.cfg = cfg
        self.model = model if model is not None else ActorCritic(obs_dims, action_dim, cfg.policy)
        if device is not None:  # a device-resident env: networks, normaliser and rollout storage live with it
            self.model.to(device)
        self.extra_loss = extra_loss
        if param_groups is None:
            param_groups = [{"params": list(self.model.parameters()), "lr_scale": 1.0}]
        self.optimizer = torch.optim.Adam([{**g, "lr": cfg.learning_rate * g["lr_scale"]} for g in param_groups],
                                          lr=cfg.learning_rate)
        self.learning_rate = cfg.learning_rate
        self.storage = RolloutStorage(cfg.steps_per_env, num_envs, self.model.actor_dim, self.model.critic_dim,
                                      action_dim, device=device)
        self._pending: tuple[torch.Tensor, ...] | None = None
        self.dist = dist  # a DistInfo: gradients, KL and normaliser batches are shared over its ranks
        self.updates = 0

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
                     final_critic_obs: torch.Tensor | None, masked: bool = False) -> None:
        """Store the step. Time-outs bootstrap with the value of the state the episode ended in.

        `masked`: `final_critic_obs` holds every env (a device-resident env), and the bootstrap is selected with
        `torch.where` over all rows, so the step never asks the host which envs timed out.
        """
        if self._pending is None:
            raise RuntimeError("process_step called before act")
        ax, cx, actions, logp, mu, sigma, values = self._pending
        rewards = rewards.clone()
        if masked and final_critic_obs is not None:
            rewards += torch.where(truncated, self.cfg.gamma * self.model.value(final_critic_obs), 0.0)
        elif final_critic_obs is not None and truncated.any():
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
        critic_only = self.updates < cfg.critic_warmup
        for b in self.storage.minibatches(cfg.minibatches, cfg.epochs):
            dist = self.model.distribution(b["actor_obs"])
            logp = dist.log_prob(b["actions"]).sum(-1)
            entropy = dist.entropy().sum(-1).mean()
            with torch.no_grad():
                # KL between the Gaussians that collected the data and the current ones.
                kl = (torch.log(dist.stddev / b["sigma"])
                      + (b["sigma"] ** 2 + (b["mu"] - dist.mean) ** 2) / (2 * dist.stddev**2) - 0.5).sum(-1).mean()
                if self.dist is not None:  # every rank must pick the same learning rate
                    kl = ddp.average(kl, self.dist.world_size)
            if cfg.schedule == "adaptive" and not critic_only:
                if kl > cfg.desired_kl * 2.0:
                    self.learning_rate = max(1e-5, self.learning_rate / 1.5)
                elif 0.0 < kl < cfg.desired_kl / 2.0:
                    self.learning_rate = min(1e-2, self.learning_rate * 1.5)
                for g in self.optimizer.param_groups:
                    g["lr"] = self.learning_rate * g.get("lr_scale", 1.0)  # checkpoints before groups lack it
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
            if self.extra_loss is not None:
                extra, extra_stats = self.extra_loss(b)
                loss = loss + extra
                for k, v in extra_stats.items():
                    stats[k] = stats.get(k, 0.0) + v
            if critic_only:  # the actor (and its std) get no gradient
                loss = cfg.value_coef * value_loss
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.dist is not None:
                ddp.average_gradients(list(self.model.parameters()), self.dist.world_size)
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
        ax, cx = st.actor_obs.flatten(0, 1), st.critic_obs.flatten(0, 1)
        if self.dist is not None:  # all ranks' observations, so every rank's normaliser stays the same
            ax, cx = ddp.gather_rows(ax), ddp.gather_rows(cx)
        self.model.update_normalizers(ax, cx)
        self.storage.clear()
        self.updates += 1
        out = {k: v / max(n, 1) for k, v in stats.items()}
        out["learning_rate"] = self.learning_rate
        out["action_std"] = self.model.log_std.exp().mean().item()
        return out

    def state_dict(self) -> dict:
        """Everything needed to resume."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "learning_rate": self.learning_rate, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Restore from `state_dict()`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.learning_rate = state["learning_rate"]
        self.updates = int(state.get("updates", 0))


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """A PPO run: how wide, how often it checkpoints, and the PPO settings (the budget is the driver's)."""

    num_envs: int = 256
    seed: int = 0
    save_every: int = 50  # iterations between checkpoints (the driver also checkpoints every few minutes)
    export_parity_steps: int = 20
    torch_threads: int = 0  # 0: leave torch's default
    init_policy: str = ""  # an exported policy.onnx whose actor initialises this one (policies/warm_start.py)
    algo: PPOConfig = field(default_factory=PPOConfig)


@register_algorithm
class PPOTrainer(Algorithm):
    """On-policy collection over a batched env, then PPO epochs; exports the actor with its normaliser."""

    algo_id = "ppo"
    config_cls = TrainConfig
    default_steps = 30_000_000
    curve = (("mean_return", "mean episode return"), ("mean_vel_error", "velocity error (m/s)"),
             ("fall_rate", "fall rate"))
    postfix = (("env_steps_per_s", "sps"), ("mean_return", "ret"), ("mean_episode_length", "len"),
               ("mean_vel_error", "err"))
    description = "proximal policy optimisation (on-policy, asymmetric actor-critic over observation groups)"
    data_parallel = True

    def __init__(self, ctx: RunContext) -> None:
        from s2r.sim import has_device_env, make, make_device_env

        cfg: TrainConfig = ctx.cfg
        self.ctx, self.cfg = ctx, cfg
        self.rank, self.world = (ctx.dist.rank, ctx.dist.world_size) if ctx.dist is not None else (0, 1)
        # Ranks seed their envs apart, or they would collect the same rollouts.
        self.env_seed = cfg.seed + 7919 * self.rank
        # On the warp backend a task with a device-resident env trains with everything on the env's device
        # (observations, actions, rollout storage, normaliser, update). Only plain PPO: its subclasses (teacher,
        # students) read numpy episode rows through `_on_episodes`, so they keep the numpy task.
        self.on_device = type(self) is PPOTrainer and has_device_env(ctx.task_id, ctx.task_cfg)
        if self.on_device:
            task_cfg = ctx.task_cfg
            if ctx.dist is not None and not task_cfg.backend.device and torch.cuda.is_available():
                # One GPU per rank (torchrun's LOCAL_RANK), as rsl_rl's multi-GPU runs do; nccl needs it set.
                from dataclasses import replace

                task_cfg = replace(task_cfg, backend=replace(task_cfg.backend, device=f"cuda:{ctx.dist.local_rank}"))
                torch.cuda.set_device(ctx.dist.local_rank)
            self.env = make_device_env(ctx.task_id, cfg.num_envs, cfg=task_cfg, seed=self.env_seed)
        else:
            self.env = make(ctx.task_id, cfg.num_envs, cfg=ctx.task_cfg, seed=self.env_seed)
        try:
            if self.env.spec.max_episode_steps <= 1:
                raise AlgorithmTaskMismatch(
                    f"ppo learns from multi-step episodes; {ctx.task_id} is a one-step bandit (max_episode_steps "
                    f"{self.env.spec.max_episode_steps}): use --algo mfrl for it")
            algo_cfg = _critic_without_missing_privileged(cfg.algo, self.env.obs_dims)
            require_vector_groups("ppo", ctx.task_id, self.env.spec, (*algo_cfg.policy.actor_obs, *algo_cfg.policy.critic_obs))
            self.alg = self._make_ppo(algo_cfg)
            if cfg.init_policy:
                from s2r.policies.warm_start import warm_start_actor

                group = self.env.spec.groups["policy"]
                warm_start_actor(self.alg.model, cfg.init_policy, [(t.name, t.size) for t in group.terms],
                                 group.history)
        except BaseException:
            self.env.close()
            raise
        self.checkpoint_every = cfg.save_every * cfg.num_envs * cfg.algo.steps_per_env * self.world
        self.progress = 0
        self.iteration = 0
        self._obs: dict[str, torch.Tensor] | None = None
        self._episodes: dict[str, deque[float]] = {}
        self._device_episodes: dict[str, float] = {}

    def _make_ppo(self, algo_cfg: PPOConfig) -> PPO:
        """The PPO learner over this trainer's env (subclasses hand PPO a model of their own)."""
        device = self.env.device if self.on_device else None
        return PPO(self.env.obs_dims, self.env.spec.action_dim, self.cfg.num_envs, algo_cfg, dist=self.ctx.dist,
                   device=device)

    def _reset(self) -> None:
        obs = self.env.reset(seed=self.env_seed + self.iteration)
        if hasattr(self.env, "randomize_episode_start"):
            self.env.randomize_episode_start()
        self._obs = {k: torch.as_tensor(v) for k, v in obs.items()}

    def iterate(self) -> dict[str, float]:
        """Collect `steps_per_env` steps from every env, then run the PPO update."""
        import time

        if self._obs is None:
            self._reset()
        if self.on_device:
            return self._iterate_on_device()
        env, alg, cfg = self.env, self.alg, self.cfg
        t0 = time.perf_counter()
        info: dict[str, Any] = {}
        for _ in range(cfg.algo.steps_per_env):
            actions = alg.act(self._obs)
            obs_np, rew, term, trunc, info = env.step(actions.numpy())
            self._obs = {k: torch.as_tensor(v) for k, v in obs_np.items()}
            final = None
            if "final_obs" in info:
                final = alg.model.critic_input({k: torch.as_tensor(v) for k, v in info["final_obs"].items()})
            alg.process_step(torch.as_tensor(rew), torch.as_tensor(term), torch.as_tensor(trunc), final)
            for key, values in _episode_rows(info.get("episode")):
                self._episodes.setdefault(key, deque(maxlen=200)).extend(values)
            self._on_episodes(info.get("episode"))
        t_collect = time.perf_counter() - t0
        alg.compute_returns(self._obs)
        stats = alg.update()
        dt = time.perf_counter() - t0
        per_iter = cfg.num_envs * cfg.algo.steps_per_env * self.world  # every rank's steps
        self.iteration += 1
        self.progress += per_iter
        stats.update({"env_steps_per_s": per_iter / dt, "collect_fraction": t_collect / dt,
                      "nan_resets": float(info.get("log", {}).get("nan_resets", 0))})
        # Only the statistics this task reports: a manipulation task has no velocity error to log.
        names = {"return": "mean_return", "length": "mean_episode_length", "vel_error": "mean_vel_error", "fell": "fall_rate"}
        for key, values in self._episodes.items():
            stats[names.get(key, f"mean_{key}")] = float(np.mean(values))
        return stats

    def _iterate_on_device(self) -> dict[str, float]:
        """`iterate` over a device-resident env: actions, observations, rewards and storage stay on its device.

        Episode statistics are summed on the device and read once per iteration (means over the episodes that
        ended in this iteration's rollout; the numpy path keeps a window of the last 200).
        """
        import time

        env, alg, cfg = self.env, self.alg, self.cfg
        device = alg.storage.device
        t0 = time.perf_counter()
        sums = torch.zeros(5, device=device)  # finished episodes, return, length, vel_error, fell
        info: dict[str, Any] = {}
        for _ in range(cfg.algo.steps_per_env):
            actions = alg.act(self._obs)
            self._obs, rew, term, trunc, info = env.step(actions)
            alg.process_step(rew, term, trunc, alg.model.critic_input(info["final_obs"]), masked=True)
            ep = info["episode"]
            d = ep["done"].float()
            sums += torch.stack([d.sum(), (ep["return"] * d).sum(), (ep["length"] * d).sum(), (ep["vel_error"] * d).sum(),
                                 (ep["fell"] * d).sum()])
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the launches above are asynchronous: time the work, not the queueing
        t_collect = time.perf_counter() - t0
        alg.compute_returns(self._obs)
        stats = alg.update()
        dt = time.perf_counter() - t0
        per_iter = cfg.num_envs * cfg.algo.steps_per_env * self.world
        self.iteration += 1
        self.progress += per_iter
        count, ret, length, vel_error, fell = sums.tolist()  # the iteration's one read of episode statistics
        if count > 0:
            self._device_episodes = {"mean_return": ret / count, "mean_episode_length": length / count,
                                     "mean_vel_error": vel_error / count, "fall_rate": fell / count}
        stats.update({"env_steps_per_s": per_iter / dt, "collect_fraction": t_collect / dt,
                      "nan_resets": float(info["log"]["nan_resets"]), **self._device_episodes})
        return stats

    def _on_episodes(self, episode: dict[str, Any] | None) -> None:
        """Called after every env step with `info["episode"]` (None when none ended); subclasses hook in here."""

    def state_dict(self) -> dict[str, Any]:
        state = {"algo": self.alg.state_dict(), "iteration": self.iteration}
        if hasattr(self.env, "state_dict"):  # an env with a curriculum (terrain levels) resumes where it was
            state["env"] = self.env.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alg.load_state_dict(state["algo"])
        self.iteration = int(state["iteration"])
        if "env" in state and hasattr(self.env, "load_state_dict"):
            self.env.load_state_dict(state["env"])

    def export(self) -> dict[str, float]:
        model = self.alg.model
        if self.on_device:  # the export and its onnxruntime parity check run on the CPU
            import copy

            model = copy.deepcopy(model).cpu()
        return export_model(model, self.ctx.task_id, self.ctx.task_cfg, self.ctx.run.path, self.cfg)

    def close(self) -> None:
        self.env.close()


def _episode_rows(episode: dict[str, Any] | None) -> list[tuple[str, list[float]]]:
    """(statistic, values) pairs of the finished episodes in `info["episode"]` (env ids left out)."""
    if not episode:
        return []
    return [(k, np.asarray(v, dtype=np.float64).tolist()) for k, v in episode.items() if k != "env_ids"]


def _critic_without_missing_privileged(cfg: PPOConfig, obs_dims: dict[str, int]) -> PPOConfig:
    """The asymmetric critic reads `privileged` where the task has it; a gymnasium env has none."""
    from dataclasses import replace

    critic = cfg.policy.critic_obs
    if "privileged" in critic and "privileged" not in obs_dims:
        critic = tuple(g for g in critic if g != "privileged")
        return replace(cfg, policy=replace(cfg.policy, critic_obs=critic))
    return cfg


def export_model(model: ActorCritic, task_id: str, task_cfg: Any, run_dir: Path, cfg: TrainConfig) -> dict[str, float]:
    """Export `model`'s actor into run_dir, checking parity on observations from a fresh probe env."""
    from s2r.policies.export import export_policy
    from s2r.sim import make
    from s2r.sim.env import sample_obs

    probe = make(task_id, 8, cfg=task_cfg, seed=cfg.seed + 12345)
    try:
        obs = sample_obs(probe, cfg.export_parity_steps, seed=cfg.seed)
        spec = probe.spec
    finally:
        probe.close()
    x = np.concatenate([obs[g] for g in model.cfg.actor_obs], axis=1)
    model.eval()
    return export_policy(model, spec, task_id, run_dir, x, task_cfg=task_cfg)
