"""Residual off-policy RL on a frozen behaviour-cloning base (after "Residual Off-Policy RL for Finetuning
Behavior Cloning Policies").

The BC policy stays a black box: every step it proposes an action (its chunks temporally ensembled), and a
small actor sees (observation, base action) and adds a bounded correction:

    action = clip(base(obs) + scale * residual(obs, base_action), -1, 1),  residual in [-1, 1]

The actor's last layer starts at zero, so training starts exactly at the base policy; the critics (an
ensemble, `s2r.policies.offpolicy`) score the combined action and warm up before the actor moves. Rewards
are the task's sparse success. The demos the base was cloned from fill a second buffer that each batch
samples half from (RLPD's symmetric sampling), which gives the critics successes to learn from at once.

`finetune=True` is the comparison the paper makes: the same learner trains the BC network itself (its
first predicted action, no residual, no ensembling) from the same start.

Everything lands in one run folder: checkpoint.pt (atomic), replay/ (written as transitions arrive, so a
killed run resumes without losing any), TensorBoard events, curve.json, learning_curve.png, and the export:
one ONNX graph computing base + scale * residual (see `s2r.policies.bc.ChunkedPolicyGraph`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from s2r.policies.bc import BC_CHECKPOINT, ChunkedBC, ChunkedPolicyGraph, export_chunked, load_bc, temporal_ensemble
from s2r.policies.evaluate import success_episodes
from s2r.policies.offpolicy import NonFiniteLossError, OffPolicyConfig, OffPolicyLearner, residual_compose
from s2r.policies.replay import ReplayBuffer
from s2r.policies.runner import CHECKPOINT, CheckpointError, save_atomic
from s2r.real.chunking import ChunkHistory, ensemble_weights
from s2r.real.episodes import Episode, read_episodes
from s2r.real.metadata import ResidualSection
from torch import nn

BASE_GROUP = "base_action"


@dataclass(frozen=True, kw_only=True)
class ResidualConfig:
    """Residual RL run settings.

    Attributes:
        scale: Largest residual per action dimension, in normalised action units (actions span [-1, 1], so
            0.2 is 10% of the range).
        num_envs: Envs stepped together while collecting.
        max_env_steps: Budget in env steps (transitions).
        learning_starts: Transitions collected (base + exploration noise) before the first update.
        use_demos: Sample half of each batch from the base's demos.
        buffer_capacity: Online transitions kept.
        eval_every: Env steps between evaluations.
        eval_episodes: Episodes per evaluation (one per env, deterministic actor).
        checkpoint_every: Env steps between checkpoints.
        finetune: Train the BC network itself instead of a residual (the baseline).
        seed: Seed for envs, torch and sampling.
        torch_threads: torch intra-op threads (0: leave the default).
        learner: The off-policy learner (TD3-style deterministic actor, as the paper); its `utd_ratio` is the
            gradient updates per collected transition.
    """

    scale: float = 0.2
    num_envs: int = 8
    max_env_steps: int = 100_000
    learning_starts: int = 2_000
    use_demos: bool = True
    buffer_capacity: int = 1_000_000
    eval_every: int = 10_000
    eval_episodes: int = 50
    checkpoint_every: int = 10_000
    finetune: bool = False
    seed: int = 0
    torch_threads: int = 0
    learner: OffPolicyConfig = field(default_factory=lambda: OffPolicyConfig(
        actor="deterministic", actor_obs=("policy", BASE_GROUP), critic_obs=("policy", "privileged", BASE_GROUP),
        num_critics=10, critic_subset=2, n_step=3, gamma=0.99, utd_ratio=0.5, policy_delay=2, zero_init_actor=True,
        critic_warmup_updates=1_000, exploration_noise=0.3, target_noise=0.2, actor_lr=1e-4, critic_lr=3e-4))


class ResidualHead(nn.Module):
    """(obs, base_action) -> residual in [-1, 1]: the trained actor with its input normalisation, for export."""

    def __init__(self, learner: OffPolicyLearner) -> None:
        super().__init__()
        self.actor = learner.actor
        self.stochastic = learner.stochastic
        self.action_dim = learner.action_dim
        norm = learner.actor_norm
        width = next(m for m in learner.actor.modules() if isinstance(m, nn.Linear)).in_features
        self.register_buffer("mean", norm[0].clone() if norm is not None else torch.zeros(width))
        self.register_buffer("inv_std", norm[1].clone() if norm is not None else torch.ones(width))

    def forward(self, obs: torch.Tensor, base_action: torch.Tensor) -> torch.Tensor:
        raw = self.actor((torch.cat([obs, base_action], dim=-1) - self.mean) * self.inv_std)
        return torch.tanh(raw[..., : self.action_dim])  # stochastic actors export their mean


class FirstActionActor(nn.Module):
    """The BC network as a learner actor: pre-tanh first action of its chunk (full fine-tuning baseline)."""

    def __init__(self, bc: ChunkedBC) -> None:
        super().__init__()
        self.bc = bc

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        n = self.bc.normalizer
        x = torch.clamp((obs - n.mean) / torch.sqrt(n.var + n.eps), -n.clip, n.clip)
        return self.bc.net(x)[:, : self.bc.action_dim]


def first_action_bc(bc: ChunkedBC) -> ChunkedBC:
    """A chunk-1 copy of a BC network that outputs only its first action (how the fine-tuned net is run)."""
    import copy

    one = copy.deepcopy(bc)
    one.chunk = 1
    last = [m for m in one.net.modules() if isinstance(m, nn.Linear)][-1]
    keep = bc.action_dim
    new = nn.Linear(last.in_features, keep)
    with torch.no_grad():
        new.weight.copy_(last.weight[:keep])
        new.bias.copy_(last.bias[:keep])
    one.net[-1] = new
    return one


class BasePolicy:
    """The frozen base run step by step for `num_envs` envs: chunk -> temporal ensemble -> action."""

    def __init__(self, bc: ChunkedBC, ensemble_m: float, num_envs: int) -> None:
        self.bc = bc.eval().requires_grad_(False)
        self.weights = torch.from_numpy(ensemble_weights(bc.chunk, ensemble_m))
        self.history = ChunkHistory(num_envs, bc.chunk, bc.action_dim)

    @torch.no_grad()
    def propose(self, obs: np.ndarray, env_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(action, chunk) for `obs` given the history so far (of `env_ids`, default all), without advancing it."""
        chunk = self.bc(torch.as_tensor(obs, dtype=torch.float32))
        ids = slice(None) if env_ids is None else env_ids
        past, mask = (torch.from_numpy(v[ids]) for v in self.history.feed().values())
        return temporal_ensemble(chunk, past, mask, self.weights).numpy(), chunk.numpy()

    def step(self, obs: np.ndarray) -> np.ndarray:
        """The base action for this step; advances the chunk history."""
        action, chunk = self.propose(obs)
        self.history.push(chunk)
        return action

    def reset(self, env_ids: np.ndarray | None = None) -> None:
        self.history.reset(env_ids)


def demos_with_base(episodes: list[Episode], bc: ChunkedBC, ensemble_m: float) -> list[Episode]:
    """The demos with the base's action at every step added as observation group `base_action`."""
    out = []
    for ep in episodes:
        base = BasePolicy(bc, ensemble_m, 1)
        acts = np.stack([base.step(ep.obs["policy"][t : t + 1])[0] for t in range(ep.length + 1)])  # (T+1, A)
        out.append(replace(ep, obs={**ep.obs, BASE_GROUP: acts.astype(np.float32)}))
    return out


class ResidualRunner:
    """Collect with base + residual, learn off-policy, evaluate, checkpoint, export."""

    def __init__(self, task_id: str, base_dir: str | Path, run_dir: str | Path, cfg: ResidualConfig | None = None,
                 task_overrides: dict[str, Any] | None = None, resume: bool = False, progress: bool = True,
                 task_cfg: Any = None) -> None:
        from s2r.sim import make, task_config

        self.cfg = cfg = cfg or ResidualConfig()
        self.task_id = task_id
        self.base_dir = Path(base_dir)
        self.run_dir = Path(run_dir)
        self.progress = progress
        ckpt_path = self.run_dir / CHECKPOINT
        # Decided before anything is built or opened: a refused run leaves the folder as it was.
        if resume and not ckpt_path.is_file():
            raise CheckpointError(f"no checkpoint at {ckpt_path} to resume")
        if not resume and ckpt_path.is_file():
            raise CheckpointError(f"{self.run_dir} already holds a run; resume it or choose another folder")
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        bc, self.bc_cfg, bc_ckpt = load_bc(self.base_dir)
        if bc_ckpt["task_id"] != task_id:
            raise CheckpointError(f"base policy {self.base_dir / BC_CHECKPOINT} was cloned on '{bc_ckpt['task_id']}', "
                                  f"not '{task_id}'")
        self.tcfg = task_cfg if task_cfg is not None else task_config(task_id, task_overrides)
        self.env = make(task_id, cfg.num_envs, cfg=self.tcfg, seed=cfg.seed)
        self.eval_env = make(task_id, cfg.eval_episodes, cfg=self.tcfg, seed=cfg.seed + 10_000)
        try:
            self._build(task_id, bc, cfg, resume, ckpt_path)
        except BaseException:
            self.env.close()
            self.eval_env.close()
            raise

    def _build(self, task_id: str, bc: ChunkedBC, cfg: ResidualConfig, resume: bool, ckpt_path: Path) -> None:
        spec = self.env.spec
        if bc.action_dim != spec.action_dim or bc.obs_dim != self.env.obs_dims["policy"]:
            raise ValueError(f"base policy {self.base_dir} maps {bc.obs_dim} observations to {bc.action_dim} actions; "
                             f"task {task_id} has {self.env.obs_dims['policy']} and {spec.action_dim}")
        self.bc = bc
        self.obs_dims = {**self.env.obs_dims, BASE_GROUP: spec.action_dim}
        self.obs_dims.pop("image", None)
        demos = None
        stats = None
        if cfg.use_demos:
            bc_run = self.base_dir / "config.json"
            demo_dir = json.loads(bc_run.read_text()).get("demos") if bc_run.is_file() else None
            if demo_dir:
                dims = {g: d for g, d in self.env.obs_dims.items() if g != "image"}
                _, eps = read_episodes(demo_dir, task=task_id, obs_dims=dims, action_dim=spec.action_dim)
                eps = demos_with_base(eps, bc, self.bc_cfg.ensemble_m)
                demos = ReplayBuffer.from_episodes(eps)
                # Fixed input statistics from the demos: the online data's statistics drift as the policy improves.
                stats = {}
                for g in ("policy", "privileged"):
                    if g in self.obs_dims:
                        x = np.concatenate([e.obs[g] for e in eps])
                        stats[g] = (x.mean(0), x.std(0) + 1e-3)
        self.demos = demos
        lcfg = cfg.learner
        if cfg.finetune:
            # The BC net has its own normaliser inside; it reads raw `policy` observations and no base action.
            lcfg = replace(lcfg, actor_obs=("policy",), zero_init_actor=False)
            self.learner = OffPolicyLearner(self.obs_dims, spec.action_dim, lcfg, actor=FirstActionActor(self._trainable_bc()))
        else:
            self.learner = OffPolicyLearner(self.obs_dims, spec.action_dim, lcfg, compose=residual_compose(cfg.scale, BASE_GROUP),
                                            obs_stats=stats)
        self.buffer = ReplayBuffer(self.obs_dims, spec.action_dim, cfg.buffer_capacity, num_envs=cfg.num_envs,
                                   directory=self.run_dir / "replay")
        self.env_steps = 0
        self.history: list[dict[str, float]] = []
        self.wall_s = 0.0
        if resume:
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
            self.learner.load_state_dict(ckpt["learner"])
            self.env_steps, self.history, self.wall_s = ckpt["env_steps"], ckpt["history"], ckpt["wall_s"]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        from s2r.sim.config import to_dict

        (self.run_dir / "config.json").write_text(json.dumps(
            {"task_id": task_id, "task": to_dict(self.tcfg), "residual": asdict(cfg), "base": str(self.base_dir)}, indent=2,
            default=str))

    def _trainable_bc(self) -> ChunkedBC:
        import copy

        return copy.deepcopy(self.bc).requires_grad_(True).train()

    # ---- acting -------------------------------------------------------------------------------------------

    def _obs(self, obs: dict[str, np.ndarray], base_action: np.ndarray) -> dict[str, np.ndarray]:
        return {**{g: v for g, v in obs.items() if g != "image"}, BASE_GROUP: base_action}

    def evaluate(self, episodes_env: Any = None) -> dict[str, float]:
        """Success rate of the current deterministic policy, one episode per eval env."""
        env = episodes_env or self.eval_env
        base = BasePolicy(self.bc, self.bc_cfg.ensemble_m, env.num_envs)

        def act(policy_obs: np.ndarray) -> np.ndarray:
            b = base.step(policy_obs)
            a = self.learner.act({"policy": policy_obs, BASE_GROUP: b}, deterministic=True)
            return a.numpy()

        ep = success_episodes(act, env, seed=self.cfg.seed + 10_000, reset=base.reset)
        return {"success_rate": float(ep["success"].mean()), "mean_length": float(ep["length"].mean())}

    # ---- the loop -----------------------------------------------------------------------------------------

    def learn(self) -> dict[str, Any]:
        """Run until `max_env_steps`; returns final figures. Ctrl-C saves and exports what it has."""
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        cfg, env = self.cfg, self.env
        writer = SummaryWriter(str(self.run_dir))
        gen = torch.Generator().manual_seed(cfg.seed + self.env_steps)
        base = BasePolicy(self.bc, self.bc_cfg.ensemble_m, cfg.num_envs)
        obs = env.reset(seed=cfg.seed + self.env_steps)
        if not self.history:
            self._record(self.evaluate(), writer)
        bar = tqdm(total=cfg.max_env_steps, initial=self.env_steps, unit="step", unit_scale=True, disable=not self.progress,
                   dynamic_ncols=True)
        owed = 0.0  # fractional updates carried over between steps
        next_eval = (self.env_steps // cfg.eval_every + 1) * cfg.eval_every
        next_ckpt = (self.env_steps // cfg.checkpoint_every + 1) * cfg.checkpoint_every
        t0 = time.monotonic() - self.wall_s
        interrupted, failure = False, None
        metrics: dict[str, float] = {}
        try:
            b, chunk = base.propose(obs["policy"])
            while self.env_steps < cfg.max_env_steps:
                base.history.push(chunk)
                o = self._obs(obs, b)
                action = self.learner.act(o).numpy()
                nxt, rew, term, trunc, info = env.step(action)
                done = np.logical_or(term, trunc)
                # The env keeps every env's observation before auto-reset in final_obs (the others' equal nxt).
                boot = info.get("final_obs", nxt)
                # The base's next action is needed twice (to bootstrap, and to act next step): compute it once.
                b, chunk = base.propose(boot["policy"])
                self.buffer.add(o, action, rew, self._obs(boot, b), term, trunc)
                if done.any():
                    ids = np.flatnonzero(done)
                    base.reset(ids)
                    b[ids], chunk[ids] = base.propose(nxt["policy"][ids], ids)
                obs = nxt
                self.env_steps += cfg.num_envs
                bar.update(cfg.num_envs)
                if len(self.buffer) >= cfg.learning_starts:
                    owed += cfg.learner.utd_ratio * cfg.num_envs
                    while owed >= 1.0:
                        metrics = self.learner.update_from(self.buffer, self.demos, 1, gen)
                        owed -= 1.0
                if self.env_steps >= next_eval:
                    next_eval += cfg.eval_every
                    self.wall_s = time.monotonic() - t0
                    self._record(self.evaluate(), writer, metrics)
                    bar.set_postfix(success=f"{self.history[-1]['success_rate']:.2f}")
                if self.env_steps >= next_ckpt:
                    next_ckpt += cfg.checkpoint_every
                    self.wall_s = time.monotonic() - t0
                    self.save()
        except KeyboardInterrupt:
            interrupted = True
        except NonFiniteLossError as exc:
            # Stop with the last good checkpoint on disk (saving now would keep whatever the NaN touched).
            failure = str(exc)
        finally:
            bar.close()
        self.wall_s = time.monotonic() - t0
        if failure is None:
            if not self.history or self.history[-1]["env_steps"] != self.env_steps:
                self._record(self.evaluate(), writer, metrics)
            self.save()
        writer.close()
        self.buffer.sync()
        result: dict[str, Any] = {"env_steps": self.env_steps, "updates": self.learner.updates, "wall_s": self.wall_s,
                                  "interrupted": interrupted, "failed": failure}
        if failure is None:
            result["export"] = self.export()
            result["final_success"] = self.history[-1]["success_rate"]
        self.plot()
        return result

    def _record(self, ev: dict[str, float], writer: Any, metrics: dict[str, float] | None = None) -> None:
        row = {"env_steps": self.env_steps, "wall_s": round(self.wall_s, 2), **ev, **(metrics or {})}
        self.history.append(row)
        for k, v in row.items():
            if k != "env_steps":
                writer.add_scalar(f"residual/{k}", v, self.env_steps)
        (self.run_dir / "curve.json").write_text(json.dumps(self.history, indent=1))

    # ---- persistence and export ---------------------------------------------------------------------------

    def save(self) -> Path:
        """Atomic checkpoint; the replay buffer is already on disk and is fsynced with it."""
        self.buffer.sync()
        path = self.run_dir / CHECKPOINT
        save_atomic({"task_id": self.task_id, "kind": "residual", "learner": self.learner.state_dict(),
                     "env_steps": self.env_steps, "history": self.history, "wall_s": self.wall_s,
                     "cfg": asdict(self.cfg), "base": str(self.base_dir)}, path)
        return path

    def export_graph(self) -> ChunkedPolicyGraph:
        """The deployable graph: base + scale * residual (or the fine-tuned network alone)."""
        if self.cfg.finetune:
            return ChunkedPolicyGraph(first_action_bc(self.learner.actor.bc), 0.0)
        return ChunkedPolicyGraph(self.bc, self.bc_cfg.ensemble_m, ResidualHead(self.learner), self.cfg.scale)

    def export(self) -> dict[str, float]:
        """policy.onnx + policy.json (with parity check) into the run folder."""
        from s2r.sim.env import sample_obs

        parity = sample_obs(self.eval_env, 2, seed=self.cfg.seed)["policy"][:256]
        residual = ResidualSection(scale=self.cfg.scale, base=str(self.base_dir), finetune=self.cfg.finetune)
        return export_chunked(self.export_graph(), self.env.spec, self.task_id, self.run_dir, parity,
                              algo="finetune" if self.cfg.finetune else "residual",
                              residual=residual)

    def plot(self) -> Path | None:
        """learning_curve.png: success rate against env steps."""
        if not self.history:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot([h["env_steps"] for h in self.history], [h["success_rate"] for h in self.history], marker="o")
        ax.set_xlabel("env steps")
        ax.set_ylabel("success rate")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{self.task_id}: {'fine-tuned BC' if self.cfg.finetune else 'base + residual'}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = self.run_dir / "learning_curve.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def close(self) -> None:
        self.buffer.close()
        self.env.close()
        self.eval_env.close()


def export_run(run_dir: Path) -> dict[str, float]:
    """Re-export a residual (or fine-tuning) run's policy.onnx + policy.json from its checkpoint."""
    from s2r.sim import task_config
    from s2r.sim.config import from_dict

    saved = json.loads((run_dir / "config.json").read_text())
    cfg = from_dict(ResidualConfig, saved["residual"])
    tcfg = from_dict(type(task_config(saved["task_id"])), saved["task"])
    runner = ResidualRunner(saved["task_id"], saved["base"], run_dir, replace(cfg, eval_episodes=16), resume=True,
                            progress=False, task_cfg=tcfg)
    try:
        return runner.export()
    finally:
        runner.close()
