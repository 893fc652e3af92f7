"""On-policy training loop: collect, update, log, checkpoint, export.

A run lives in `runs/<task>/<timestamp>/`: TensorBoard events, `checkpoint.pt` (written atomically),
`history.json`, and at the end (or on Ctrl-C) `policy.onnx`, `policy.json` and `learning_curve.png`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from s2r.policies.networks import ActorCritic
from s2r.policies.ppo import PPO, PPOConfig
from s2r.sim import make
from s2r.sim.config import from_dict, to_dict
from s2r.sim.env import sample_obs

CHECKPOINT = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used for this run."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How long and how wide a run is."""

    num_envs: int = 256
    max_env_steps: int = 30_000_000
    max_minutes: float = 0.0  # 0: no wall-clock bound
    seed: int = 0
    save_every: int = 50  # iterations between checkpoints
    export_parity_steps: int = 20
    torch_threads: int = 0  # 0: leave torch's default
    algo: PPOConfig = field(default_factory=PPOConfig)


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, then rename (a crash never leaves half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:  # includes Ctrl-C mid-write: the old checkpoint stays, no stray temp file
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, task_id: str | None = None) -> dict[str, Any]:
    """Load a checkpoint; refuses one written for another task, naming both."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or foreign file
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or "task_id" not in ckpt:
        raise CheckpointError(f"{path} is not an s2r checkpoint")
    if task_id is not None and ckpt["task_id"] != task_id:
        raise CheckpointError(
            f"checkpoint {path} was trained on task '{ckpt['task_id']}', not '{task_id}'; "
            "start a new run or pass the matching task"
        )
    return ckpt


class OnPolicyRunner:
    """Trains PPO on a registered task and exports the result."""

    def __init__(self, task_id: str, task_cfg: Any, cfg: TrainConfig, run_dir: Path,
                 resume_from: Path | None = None, progress: bool = True) -> None:
        self.task_id, self.task_cfg, self.cfg = task_id, task_cfg, cfg
        self.run_dir = Path(run_dir)
        self.progress = progress
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        self.env = make(task_id, cfg.num_envs, cfg=task_cfg, seed=cfg.seed)
        self.alg = PPO(self.env.obs_dims, self.env.spec.action_dim, cfg.num_envs, cfg.algo)
        # Only now: a config the env refuses must not leave an empty run folder behind.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.iteration = 0
        self.env_steps = 0
        self.wall_time = 0.0
        self.history: list[dict[str, float]] = []
        if resume_from is not None:
            ckpt = load_checkpoint(resume_from, task_id)
            self.alg.load_state_dict(ckpt["algo"])
            self.iteration, self.env_steps = ckpt["iteration"], ckpt["env_steps"]
            self.wall_time, self.history = ckpt["wall_time"], ckpt["history"]
            torch.set_rng_state(ckpt["torch_rng"])
        self._write_config()

    def _write_config(self) -> None:
        cfg = {"task_id": self.task_id, "task": to_dict(self.task_cfg), "train": to_dict(self.cfg)}
        (self.run_dir / "config.json").write_text(json.dumps(cfg, indent=2))

    def learn(self) -> dict[str, Any]:
        """Train until the step or time budget is spent (or Ctrl-C), then checkpoint and export.

        Returns:
            Summary: env steps, wall time, last logged stats, export parity.
        """
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        cfg, env, alg = self.cfg, self.env, self.alg
        writer = SummaryWriter(str(self.run_dir))
        obs_np = env.reset(seed=cfg.seed + self.iteration)
        if hasattr(env, "randomize_episode_start"):
            env.randomize_episode_start()
        obs = {k: torch.as_tensor(v) for k, v in obs_np.items()}
        ep_return: deque[float] = deque(maxlen=200)
        ep_len: deque[float] = deque(maxlen=200)
        ep_err: deque[float] = deque(maxlen=200)
        ep_fell: deque[float] = deque(maxlen=200)
        per_iter = cfg.num_envs * cfg.algo.steps_per_env
        bar = tqdm(total=cfg.max_env_steps, initial=self.env_steps, unit="step", unit_scale=True,
                   disable=not self.progress, dynamic_ncols=True, smoothing=0.1)
        deadline = time.monotonic() + cfg.max_minutes * 60 if cfg.max_minutes > 0 else float("inf")
        interrupted = False
        stats: dict[str, float] = {}
        try:
            while self.env_steps < cfg.max_env_steps and time.monotonic() < deadline:
                t0 = time.perf_counter()
                for _ in range(cfg.algo.steps_per_env):
                    actions = alg.act(obs)
                    obs_np, rew, term, trunc, info = env.step(actions.numpy())
                    obs = {k: torch.as_tensor(v) for k, v in obs_np.items()}
                    final = None
                    if "final_obs" in info:
                        final = alg.model.critic_input({k: torch.as_tensor(v) for k, v in info["final_obs"].items()})
                    alg.process_step(torch.as_tensor(rew), torch.as_tensor(term), torch.as_tensor(trunc), final)
                    if "episode" in info:
                        e = info["episode"]
                        ep_return.extend(e["return"].tolist())
                        ep_len.extend(e["length"].tolist())
                        ep_err.extend(e["vel_error"].tolist())
                        ep_fell.extend(e["fell"].astype(float).tolist())
                t_collect = time.perf_counter() - t0
                alg.compute_returns(obs)
                stats = alg.update()
                dt = time.perf_counter() - t0
                self.iteration += 1
                self.env_steps += per_iter
                self.wall_time += dt
                stats.update({
                    "env_steps_per_s": per_iter / dt,
                    "collect_fraction": t_collect / dt,
                    "mean_return": float(np.mean(ep_return)) if ep_return else float("nan"),
                    "mean_episode_length": float(np.mean(ep_len)) if ep_len else float("nan"),
                    "mean_vel_error": float(np.mean(ep_err)) if ep_err else float("nan"),
                    "fall_rate": float(np.mean(ep_fell)) if ep_fell else float("nan"),
                    "nan_resets": float(info.get("log", {}).get("nan_resets", 0)),
                })
                for k, v in stats.items():
                    writer.add_scalar(f"train/{k}", v, self.env_steps)
                self.history.append({"iteration": self.iteration, "env_steps": self.env_steps,
                                     "wall_time": self.wall_time, **stats})
                if deadline != float("inf"):
                    # A wall-clock budget binds first: size the bar to the steps it will allow, so ETA is true.
                    left = max(deadline - time.monotonic(), 0.0)
                    bar.total = min(cfg.max_env_steps, self.env_steps + int(stats["env_steps_per_s"] * left))
                bar.update(per_iter)
                bar.set_postfix({"sps": f"{stats['env_steps_per_s']:.0f}", "ret": f"{stats['mean_return']:.2f}",
                                 "len": f"{stats['mean_episode_length']:.0f}",
                                 "err": f"{stats['mean_vel_error']:.2f}"}, refresh=False)
                if self.iteration % cfg.save_every == 0:
                    self.save()
        except KeyboardInterrupt:
            interrupted = True
            bar.write("interrupted: saving a checkpoint and exporting the current policy")
        finally:
            bar.close()
            writer.close()
        self.save()
        parity = self.export()
        self.plot()
        return {"task_id": self.task_id, "run_dir": str(self.run_dir), "env_steps": self.env_steps,
                "iterations": self.iteration, "wall_time_s": self.wall_time, "interrupted": interrupted,
                "export": parity, **{k: stats.get(k) for k in ("mean_return", "mean_vel_error", "fall_rate")}}

    def save(self) -> Path:
        """Atomically write the checkpoint and the history."""
        path = self.run_dir / CHECKPOINT
        save_atomic({
            "format": 1,
            "task_id": self.task_id,
            "task_cfg": to_dict(self.task_cfg),
            "train_cfg": to_dict(self.cfg),
            "obs_dims": self.env.obs_dims,
            "action_dim": self.env.spec.action_dim,
            "algo": self.alg.state_dict(),
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "wall_time": self.wall_time,
            "history": self.history,
            "torch_rng": torch.get_rng_state(),
        }, path)
        tmp = self.run_dir / "history.json.tmp"
        tmp.write_text(json.dumps(self.history))
        os.replace(tmp, self.run_dir / "history.json")
        return path

    def export(self) -> dict[str, float]:
        """Export policy.onnx + policy.json with a parity check on observations from a fresh env."""
        return export_model(self.alg.model, self.task_id, self.task_cfg, self.run_dir, self.cfg)

    def plot(self) -> Path | None:
        """learning_curve.png: return, velocity error and fall rate against training wall clock."""
        if not self.history:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        h = self.history
        x = np.array([r["wall_time"] for r in h]) / 60
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for ax, key, label in zip(axes, ("mean_return", "mean_vel_error", "fall_rate"),
                                  ("mean episode return", "velocity error (m/s)", "fall rate"), strict=True):
            ax.plot(x, [r[key] for r in h])
            ax.set_xlabel("training wall clock (min)")
            ax.set_title(label)
            ax.grid(alpha=0.3)
        fig.suptitle(f"{self.task_id}: {h[-1]['env_steps'] / 1e6:.1f}M env steps in {h[-1]['wall_time'] / 60:.1f} min")
        fig.tight_layout()
        path = self.run_dir / "learning_curve.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def close(self) -> None:
        """Release the env."""
        self.env.close()


def export_model(model: ActorCritic, task_id: str, task_cfg: Any, run_dir: Path, cfg: TrainConfig) -> dict[str, float]:
    """Export `model`'s actor into run_dir, checking parity on observations from a fresh probe env."""
    from s2r.policies.export import export_policy

    probe = make(task_id, 8, cfg=task_cfg, seed=cfg.seed + 12345)
    try:
        obs = sample_obs(probe, cfg.export_parity_steps, seed=cfg.seed)
        spec = probe.spec
    finally:
        probe.close()
    x = np.concatenate([obs[g] for g in model.cfg.actor_obs], axis=1)
    model.eval()
    return export_policy(model, spec, task_id, run_dir, x)


def export_checkpoint(run_dir: Path) -> dict[str, float]:
    """Re-export a run from its checkpoint alone (no training env, no rewrite of the run's config)."""
    from s2r.sim import task_config

    ckpt = load_checkpoint(Path(run_dir) / CHECKPOINT)
    cfg = train_config_from_checkpoint(ckpt)
    task_cfg = from_dict(type(task_config(ckpt["task_id"])), ckpt["task_cfg"])
    model = ActorCritic(ckpt["obs_dims"], ckpt["action_dim"], cfg.algo.policy)
    model.load_state_dict(ckpt["algo"]["model"])
    return export_model(model, ckpt["task_id"], task_cfg, Path(run_dir), cfg)


def train_config_from_checkpoint(ckpt: dict[str, Any]) -> TrainConfig:
    """Rebuild the TrainConfig a checkpoint was written with."""
    return from_dict(TrainConfig, ckpt["train_cfg"])


def replace_budget(cfg: TrainConfig, steps: int | None, minutes: float | None) -> TrainConfig:
    """Apply --steps/--minutes to a config."""
    kw: dict[str, Any] = {}
    if steps is not None:
        kw["max_env_steps"] = int(steps)
    if minutes is not None:
        kw["max_minutes"] = float(minutes)
    return dataclasses.replace(cfg, **kw)
