"""SAC and TD3 on any task, registered as algorithms `sac` and `td3` on the shared off-policy core.

Both are the same loop around `s2r.policies.offpolicy.OffPolicyLearner`; only the actor kind differs:

- `sac`: tanh-squashed Gaussian actor, entropy temperature tuned towards -|A|, two critics.
- `td3`: deterministic tanh actor with Gaussian exploration noise, target policy smoothing, actor every
  second update, two critics (the core keeps no target actor; see its docstring).

One iteration (`iterate`) steps `num_envs` envs in lockstep `steps_per_iteration` times; each step's
transitions go straight into a `ReplayBuffer` in the run's `replay/` folder (so a killed run resumes with every
transition it collected, checkpoint or not), and after `learning_starts` transitions each step is followed by
`utd_ratio` gradient updates per collected transition. Before that, actions are uniform in [-1, 1]. Actions
are always in [-1, 1]: a task maps them to its own units (a `gym:` env through the adapter's scale/offset,
recorded in policy.json).

    s2r train gym:Pendulum-v1 --algo sac --steps 20000
    s2r train Puck-Velocity-Flat --algo td3 --num-envs 8

From pixels: name the task's image groups in `learner.encoder.image_groups` (and give the task its camera, e.g.
`Panda-Lift-Cube` with `image=True`). The replay buffer then keeps them as uint8, the shared encoder learns
through the critic loss (see `s2r.policies.offpolicy`), and the export takes each image group as a uint8
(1, H, W, C) ONNX input named after its group, with its camera and shape in policy.json.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from s2r.policies.algorithm import (
    Algorithm,
    AlgorithmTaskMismatch,
    RunContext,
    register_algorithm,
    require_vector_groups,
)
from s2r.policies.offpolicy import ExportedActor, OffPolicyConfig, OffPolicyLearner
from s2r.policies.replay import ReplayBuffer
from s2r.sim.env import EnvSpec, VecEnv


@dataclass(frozen=True, kw_only=True)
class OffPolicyRunConfig:
    """Settings shared by `sac` and `td3` (the batch size and update ratio live in `learner`).

    Attributes:
        num_envs: Envs stepped together while collecting.
        seed: Seed for envs, torch and sampling.
        torch_threads: torch intra-op threads (0: leave the default).
        learning_starts: Transitions collected with uniform random actions before the first update.
        buffer_capacity: Transitions kept in the replay buffer (and on disk).
        steps_per_iteration: Lockstep env steps per iteration, i.e. per logged row and progress-bar update.
        return_window: Finished episodes averaged into `mean_return`.
        eval_episodes: Episodes of the deterministic actor in each evaluation (one per eval env).
        eval_every: Env steps between evaluations (0: only the final one).
        learner: The off-policy learner; `batch_size` and `utd_ratio` (updates per collected transition) here.
    """

    num_envs: int = 1
    seed: int = 0
    torch_threads: int = 0
    learning_starts: int = 1_000
    buffer_capacity: int = 1_000_000
    steps_per_iteration: int = 50
    return_window: int = 10
    eval_episodes: int = 10
    eval_every: int = 10_000
    learner: OffPolicyConfig = field(default_factory=OffPolicyConfig)


@dataclass(frozen=True, kw_only=True)
class SACConfig(OffPolicyRunConfig):
    """SAC: the defaults of the SAC paper (two critics, 256x256, batch 256, one update per transition)."""

    learner: OffPolicyConfig = field(default_factory=lambda: OffPolicyConfig(
        actor="stochastic", num_critics=2, critic_subset=2, batch_size=256, utd_ratio=1.0, gamma=0.99, tau=0.005,
        actor_lr=3e-4, critic_lr=3e-4, alpha_lr=3e-4, init_alpha=1.0))


@dataclass(frozen=True, kw_only=True)
class TD3Config(OffPolicyRunConfig):
    """TD3: the defaults of the TD3 paper (two critics, policy delay 2, noise 0.1, smoothing 0.2 clipped at 0.5)."""

    learner: OffPolicyConfig = field(default_factory=lambda: OffPolicyConfig(
        actor="deterministic", num_critics=2, critic_subset=2, batch_size=256, utd_ratio=1.0, gamma=0.99, tau=0.005,
        actor_lr=3e-4, critic_lr=3e-4, policy_delay=2, exploration_noise=0.1, target_noise=0.2, target_noise_clip=0.5))


def check_spec(task_id: str, spec: EnvSpec, cfg: OffPolicyRunConfig, algo_id: str) -> None:
    """Raise AlgorithmTaskMismatch with one sentence when the env cannot be learned by this vector learner."""
    lc = cfg.learner
    if spec.action_dim == 0:
        raise AlgorithmTaskMismatch(f"task '{task_id}' has no action to learn; {algo_id} needs at least one continuous "
                                    "action")
    require_vector_groups(algo_id, task_id, spec, (*lc.actor_obs, *lc.critic_obs))
    for g in lc.encoder.image_groups:
        if g not in spec.groups or not spec.groups[g].is_image:
            images = [name for name, s in spec.groups.items() if s.is_image]
            raise AlgorithmTaskMismatch(f"learner.encoder.image_groups names '{g}', which is not an image group of task "
                                        f"'{task_id}' (its image groups: {images or 'none; enable its camera'})")
    if tuple(lc.actor_obs) != ("policy",):
        raise AlgorithmTaskMismatch(f"{algo_id}'s actor must read the 'policy' group alone (policy.json describes that "
                                    f"input), not {list(lc.actor_obs)}; an asymmetric critic may read more "
                                    "(learner.critic_obs)")


class _OffPolicyAlgorithm(Algorithm):
    """The loop both SAC and TD3 run; subclasses set the id, the config class and the description."""

    unit: ClassVar[str] = "env steps"
    default_steps: ClassVar[int] = 100_000
    checkpoint_every: ClassVar[int] = 50_000
    curve: ClassVar[tuple[tuple[str, str], ...]] = (("mean_return", "mean episode return (training)"),
                                                    ("eval_return", "deterministic evaluation return"))
    postfix: ClassVar[tuple[tuple[str, str], ...]] = (("mean_return", "ret"), ("critic_loss", "q_loss"))
    durable_replay: ClassVar[bool] = True

    def __init__(self, ctx: RunContext) -> None:
        from s2r.sim import make
        from s2r.sim.gym_adapter import GymEnvError

        self.ctx = ctx
        self.cfg = cfg = ctx.cfg
        try:
            self.env: VecEnv = make(ctx.task_id, cfg.num_envs, cfg=ctx.task_cfg, seed=ctx.seed)
        except GymEnvError as exc:  # e.g. a Discrete action space: the task does not suit a continuous learner
            raise AlgorithmTaskMismatch(str(exc)) from None
        self.eval_env: VecEnv | None = None
        self.buffer: ReplayBuffer | None = None
        try:
            check_spec(ctx.task_id, self.env.spec, cfg, self.algo_id)
            lc = cfg.learner
            self.groups = tuple(dict.fromkeys((*lc.actor_obs, *lc.critic_obs, *lc.encoder.image_groups)))
            dims = {g: self.env.obs_shapes[g] for g in self.groups}
            dtypes = {g: self.env.obs_dtypes[g] for g in self.groups}
            self.learner = OffPolicyLearner(dims, self.env.spec.action_dim, lc, obs_dtypes=dtypes)
            # Re-opening the folder restores every transition on disk (the durable part of the run).
            self.buffer = ReplayBuffer(dims, self.env.spec.action_dim, cfg.buffer_capacity, num_envs=cfg.num_envs,
                                       directory=ctx.run.replay, obs_dtypes=dtypes)
        except BaseException:
            self.close()
            raise
        # With a checkpoint the driver overwrites this; without one, the env steps done are those on disk.
        self.progress = len(self.buffer) if ctx.resume else 0
        self.owed = 0.0  # fractional updates carried from one step to the next
        self.episodes = 0
        self.recent: deque[float] = deque(maxlen=cfg.return_window)
        self.next_eval = 0
        self.last_eval: dict[str, float] = {}
        self._obs: dict[str, np.ndarray] | None = None
        self._rng: np.random.Generator | None = None
        self._gen: torch.Generator | None = None

    # ---- collecting and learning --------------------------------------------------------------------------

    def _start(self) -> None:
        """Reset envs and random streams where this run (or this resume) starts, so no episode is replayed."""
        start = self.ctx.seed + self.progress
        self._obs = self.env.reset(seed=start)
        self._rng = np.random.default_rng(start)
        self._gen = torch.Generator().manual_seed(start)
        every = self.cfg.eval_every
        self.next_eval = (self.progress // every + 1) * every if every else 0

    def iterate(self) -> dict[str, float]:
        """`steps_per_iteration` lockstep env steps, each followed by the updates it is owed."""
        if self._obs is None:
            self._start()
        cfg, env, buf = self.cfg, self.env, self.buffer
        metrics: dict[str, float] = {}
        n, a_dim = cfg.num_envs, env.spec.action_dim
        for _ in range(cfg.steps_per_iteration):
            obs = {g: self._obs[g] for g in self.groups}
            if len(buf) < cfg.learning_starts:
                action = self._rng.uniform(-1.0, 1.0, (n, a_dim)).astype(np.float32)
            else:
                action = self.learner.act(obs).numpy()
            nxt, rew, term, trunc, info = env.step(action)
            # final_obs holds every env's observation before auto-reset (equal to nxt for the others).
            boot = info.get("final_obs", nxt)
            buf.add(obs, action, rew, {g: boot[g] for g in self.groups}, term, trunc)
            if "episode" in info:
                returns = np.asarray(info["episode"]["return"], dtype=np.float64)
                self.recent.extend(returns.tolist())
                self.episodes += len(returns)
            self._on_episodes(info.get("episode"))
            self._obs = nxt
            self.progress += n
            if len(buf) >= cfg.learning_starts:
                self.owed += cfg.learner.utd_ratio * n
                due = int(self.owed)
                if due:
                    self.owed -= due
                    metrics = self.learner.update_from(buf, None, due, self._gen)
        stats: dict[str, float] = {**metrics, "episodes": float(self.episodes), "buffer": float(len(buf)),
                                   "updates": float(self.learner.updates)}
        if self.recent:
            stats["mean_return"] = float(np.mean(self.recent))
        if self.next_eval and self.progress >= self.next_eval:
            self.next_eval += cfg.eval_every
            stats.update(self.evaluate())
        return stats

    def _on_episodes(self, episode: dict[str, Any] | None) -> None:
        """Called after every env step with `info["episode"]` (None when none ended); subclasses hook in here."""

    def evaluate(self) -> dict[str, float]:
        """Deterministic actor, one episode in each of `eval_episodes` envs: mean return and length."""
        from s2r.sim import make

        cfg = self.cfg
        if cfg.eval_episodes < 1:
            return {}
        if self.eval_env is None:
            self.eval_env = make(self.ctx.task_id, cfg.eval_episodes, cfg=self.ctx.task_cfg, seed=self.ctx.seed + 10_000)
        env = self.eval_env
        obs = env.reset(seed=self.ctx.seed + 10_000)
        n = env.num_envs
        ret, length = np.full(n, np.nan), np.zeros(n)
        running = np.zeros(n)
        limit = env.spec.max_episode_steps or 1_000  # an env with no time limit is judged on its first 1000 steps
        steps = 0
        while np.isnan(ret).any() and steps <= limit:
            action = self.learner.act({g: obs[g] for g in self.groups}, deterministic=True).numpy()
            obs, rew, _, _, info = env.step(action)
            running += rew
            ep = info.get("episode")
            if ep is not None:
                for i, r, k in zip(ep["env_ids"], ep["return"], ep["length"], strict=True):
                    if np.isnan(ret[i]):
                        ret[i], length[i] = r, k
            steps += 1
        open_ = np.isnan(ret)
        ret[open_], length[open_] = running[open_], steps
        self.last_eval = {"eval_return": float(ret.mean()), "eval_length": float(length.mean())}
        return self.last_eval

    def final_stats(self) -> dict[str, float]:
        """A last deterministic evaluation (skipped when `eval_episodes` is 0)."""
        return self.evaluate()

    # ---- persistence ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"learner": self.learner.state_dict(), "owed": self.owed, "episodes": self.episodes,
                "recent": list(self.recent)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])
        self.owed = float(state["owed"])
        self.episodes = int(state["episodes"])
        self.recent.extend(state["recent"])

    def sync(self) -> None:
        if self.buffer is not None:
            self.buffer.sync()

    def on_resume(self) -> str:
        return f"with {len(self.buffer):,} transitions already on disk"

    def export(self) -> dict[str, Any]:
        """policy.onnx (deterministic actor, normaliser and image encoder inside) + policy.json, parity-checked."""
        from s2r.policies.export import build_metadata, export_onnx_checked, image_inputs
        from s2r.sim import make
        from s2r.sim.env import sample_obs

        spec = self.env.spec
        actor = ExportedActor(self.learner)
        obs_dim = self.env.obs_dims["policy"]
        images = self.learner.image_groups
        env = make(self.ctx.task_id, 4, cfg=self.ctx.task_cfg, seed=self.ctx.seed + 20_000)
        try:
            sampled = sample_obs(env, 16, seed=self.ctx.seed)
        finally:
            env.close()
        meta = build_metadata(spec, self.ctx.task_id, obs_dim, algo=self.algo_id, task_cfg=self.ctx.task_cfg,
                              images=image_inputs(spec, images))
        example = (torch.zeros(1, obs_dim), *(torch.zeros(1, *spec.groups[g].shape, dtype=torch.uint8) for g in images))
        feed = {"obs": sampled["policy"], **{g: sampled[g] for g in images}}
        return export_onnx_checked(actor, example, ["obs", *images], ["actions"], self.ctx.run.path, feed, meta)

    def close(self) -> None:
        if self.buffer is not None:
            self.buffer.close()
        self.env.close()
        if self.eval_env is not None:
            self.eval_env.close()


@register_algorithm
class SAC(_OffPolicyAlgorithm):
    """Soft actor-critic on the shared off-policy core."""

    algo_id = "sac"
    config_cls = SACConfig
    description = "soft actor-critic (stochastic actor, entropy tuning), any task or gym:<id> with Box actions"


@register_algorithm
class TD3(_OffPolicyAlgorithm):
    """Twin delayed DDPG on the shared off-policy core."""

    algo_id = "td3"
    config_cls = TD3Config
    description = "TD3 (deterministic actor, target smoothing, delayed actor), any task or gym:<id> with Box actions"


__all__ = ["SAC", "TD3", "OffPolicyRunConfig", "SACConfig", "TD3Config", "check_spec"]
