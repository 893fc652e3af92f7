"""The one run driver: every algorithm trains through `train()`.

It owns what every run needs and no algorithm should write again: the run folder (`RunDir`), the budget
(`--steps` in the algorithm's unit and/or `--minutes`), the progress bar, TensorBoard, atomic checkpoints on a
step cadence and a wall-clock cadence (whichever comes first), Ctrl-C (save, export, exit 130), resume of any
algorithm from its run folder, the final export and the learning-curve PNG.

Resume takes whatever is durable: the checkpoint when there is one; with none, an algorithm that keeps its
transitions on disk (`durable_replay`) restarts its learner from the saved config and keeps every one of
them; any other algorithm says there is nothing to resume and starts over only when asked (`restart=True`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from s2r.policies.algorithm import Algorithm, AlgorithmTaskMismatch, RunContext, get_algorithm
from s2r.policies.rundir import RunDir, RunDirError
from s2r.sim.config import apply_overrides, from_dict, to_dict

CHECKPOINT_FORMAT = 2


class CheckpointError(ValueError):
    """A checkpoint or run folder that cannot be used for this run."""


@dataclass(frozen=True, kw_only=True)
class Budget:
    """How long a run goes: `steps` in the algorithm's unit, `minutes` of wall clock; the first reached ends it."""

    steps: int | None = None
    minutes: float | None = None


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """Everything that defines a run; written to config.json so a resume rebuilds it exactly."""

    algo: str
    task_id: str
    task_cfg: Any
    cfg: Any
    seed: int = 0
    budget: Budget = Budget()
    checkpoint_minutes: float = 5.0


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, then rename (a crash never leaves half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:  # includes Ctrl-C mid-write: the old checkpoint stays, no stray temp file
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, task_id: str | None = None, algo: str | None = None) -> dict[str, Any]:
    """Load a checkpoint; refuses a foreign file, another task's or another algorithm's, naming both."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or foreign file
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or "task_id" not in ckpt:
        raise CheckpointError(f"{path} is not an s2r checkpoint")
    ckpt = upgrade_checkpoint(ckpt, path)
    if task_id is not None and ckpt["task_id"] != task_id:
        raise CheckpointError(f"checkpoint {path} was trained on task '{ckpt['task_id']}', not '{task_id}'; "
                              "start a new run or pass the matching task")
    if algo is not None and ckpt["algo"] != algo:
        raise CheckpointError(f"checkpoint {path} was written by algorithm '{ckpt['algo']}', not '{algo}'; "
                              f"resume it with --algo {ckpt['algo']} (or leave --algo out)")
    return ckpt


def upgrade_checkpoint(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """Checkpoints from before the run driver (format 1) named their algorithm three ways; read them as format 2."""
    if ckpt.get("format") == CHECKPOINT_FORMAT:
        return ckpt
    tag = ckpt.get("algo") if isinstance(ckpt.get("algo"), str) else ckpt.get("kind")
    if tag is None and isinstance(ckpt.get("algo"), dict) and "train_cfg" in ckpt:  # PPO, format 1
        return {"format": CHECKPOINT_FORMAT, "algo": "ppo", "task_id": ckpt["task_id"], "progress": ckpt["env_steps"],
                "wall_time": ckpt["wall_time"], "history": ckpt["history"], "torch_rng": ckpt["torch_rng"],
                "state": {"algo": ckpt["algo"], "iteration": ckpt["iteration"]}, "legacy": {
                    "task_cfg": ckpt["task_cfg"], "cfg": ckpt["train_cfg"]}}
    raise CheckpointError(f"{path} was written before the run driver by '{tag or 'an unknown algorithm'}' and cannot be "
                          "resumed by this version; export it with the version that trained it, or start a new run")


class RunDriver:
    """Builds an algorithm for a run folder and trains it within a budget."""

    def __init__(self, spec: RunSpec, run_dir: str | Path, *, resume: bool = False, restart: bool = False,
                 progress: bool = True, dist: Any = None) -> None:
        self.spec = spec
        self.run = RunDir(Path(run_dir))
        self.dist = dist  # s2r.policies.distributed.DistInfo: rank 0 owns the folder, the others only compute
        self.progress_bar = progress and (dist is None or dist.is_main)
        self.cls: type[Algorithm] = get_algorithm(spec.algo)
        if dist is not None and not self.cls.data_parallel:
            raise AlgorithmTaskMismatch(f"--algo {spec.algo} does not run data-parallel; start it without torchrun "
                                        "(ppo does run data-parallel)")
        if dist is not None and not dist.is_main:
            self._init_worker(spec, resume, progress)
            return
        ckpt = None
        if resume:
            if self.run.checkpoint.is_file():
                ckpt = load_checkpoint(self.run.checkpoint, spec.task_id, spec.algo)
            elif not (self.cls.durable_replay or restart):
                raise CheckpointError(f"{self.run.path} has no checkpoint: the run was stopped before its first one and "
                                      f"'{spec.algo}' keeps nothing else to resume from; pass --restart to start it over "
                                      "with the same config")
        elif self.run.checkpoint.is_file():
            raise CheckpointError(f"{self.run.path} already holds a run; resume it or choose another folder")
        elif any(self.run.replay.glob("chunk_*.bin")):
            # A new run there would silently learn from another run's transitions.
            raise CheckpointError(f"{self.run.path} already holds transitions of a run (replay/); resume it or choose "
                                  "another folder")
        if spec.cfg is not None and hasattr(spec.cfg, "torch_threads") and spec.cfg.torch_threads:
            torch.set_num_threads(spec.cfg.torch_threads)
        torch.manual_seed(spec.seed)
        np.random.seed(spec.seed % 2**32)
        # The folder is created (and config.json written) only once the algorithm has accepted the task and
        # built, so a refused run leaves nothing behind.
        existed = self.run.path.exists()
        self.run.path.mkdir(parents=True, exist_ok=True)
        try:
            self.algo = self.cls(RunContext(task_id=spec.task_id, task_cfg=spec.task_cfg, cfg=spec.cfg, run=self.run,
                                            seed=spec.seed, resume=resume, progress=progress,
                                            total=spec.budget.steps, dist=dist))
        except BaseException:
            if not existed and not any(self.run.path.iterdir()):
                self.run.path.rmdir()
            raise
        self.wall_time = 0.0
        self.history: list[dict[str, Any]] = []
        self.resumed_from = ""
        if ckpt is not None:
            self.algo.load_state_dict(ckpt["state"])
            self.algo.progress = int(ckpt["progress"])
            self.wall_time, self.history = float(ckpt["wall_time"]), list(ckpt["history"])
            torch.set_rng_state(ckpt["torch_rng"])
            self.resumed_from = f"resumed from the checkpoint at {self.algo.progress:,} {self.cls.unit}"
        elif resume:
            self.history = self.run.read_history()
            self.resumed_from = "resumed from scratch (no checkpoint)"
        if resume:
            extra = self.algo.on_resume()
            self.resumed_from += f" {extra}" if extra else ""
        self._write_config()
        if dist is not None:
            # Every rank starts from rank 0's weights, optimiser and progress (fresh or resumed).
            from s2r.policies.distributed import broadcast_object

            broadcast_object({"state": self.algo.state_dict(), "progress": self.algo.progress})

    def _init_worker(self, spec: RunSpec, resume: bool, progress: bool) -> None:
        """A rank other than 0: build the algorithm on its own envs, take rank 0's state, write nothing."""
        from s2r.policies.distributed import broadcast_object

        torch.manual_seed(spec.seed)
        self.algo = self.cls(RunContext(task_id=spec.task_id, task_cfg=spec.task_cfg, cfg=spec.cfg, run=self.run,
                                        seed=spec.seed, resume=resume, progress=False, total=spec.budget.steps,
                                        dist=self.dist))
        got = broadcast_object(None)
        self.algo.load_state_dict(got["state"])  # type: ignore[index]
        self.algo.progress = int(got["progress"])  # type: ignore[index]
        self.wall_time, self.history, self.resumed_from = 0.0, [], ""

    def _write_config(self) -> None:
        s = self.spec
        self.run.write_config({"algo": s.algo, "task_id": s.task_id, "seed": s.seed, "task": to_dict(s.task_cfg),
                               "algo_cfg": to_dict(s.cfg), "budget": {"steps": s.budget.steps, "minutes": s.budget.minutes},
                               "checkpoint_minutes": s.checkpoint_minutes})

    # ---- the loop -----------------------------------------------------------------------------------------------

    def learn(self) -> dict[str, Any]:
        """Iterate until the budget is spent (or Ctrl-C), then checkpoint, export and plot.

        Returns:
            Summary: algorithm, progress, wall time, interrupted, export parity, last logged statistics.
        """
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        if self.dist is not None and not self.dist.is_main:
            return self._learn_worker()
        cls, algo, b = self.cls, self.algo, self.spec.budget
        total = b.steps if b.steps is not None else (algo.default_steps if b.minutes is None else 10**15)
        start = time.monotonic()
        deadline = start + b.minutes * 60 if b.minutes else float("inf")
        writer = SummaryWriter(str(self.run.path))
        bar = tqdm(total=None if total >= 10**15 else total, initial=algo.progress, unit=cls.unit.split()[-1],
                   unit_scale=True, disable=not self.progress_bar, dynamic_ncols=True, smoothing=0.1, desc=cls.algo_id)
        if self.resumed_from:
            bar.write(f"s2r: {self.resumed_from}")
        every = algo.checkpoint_every
        next_ckpt = (algo.progress // every + 1) * every if every else None
        last_ckpt_t = time.monotonic()
        interrupted, stats = False, {}
        try:
            while self._go(algo.progress < total and time.monotonic() < deadline):
                t0 = time.perf_counter()
                before = algo.progress
                stats = algo.iterate()
                self.wall_time += time.perf_counter() - t0
                self._log(stats, writer)
                if deadline != float("inf") and algo.progress > before:
                    # A wall-clock budget binds first: size the bar to what the time left allows, so ETA is true.
                    rate = (algo.progress - before) / max(time.perf_counter() - t0, 1e-9)
                    bar.total = min(total, algo.progress + int(rate * max(deadline - time.monotonic(), 0.0)))
                bar.update(algo.progress - before)
                bar.set_postfix({lab: _fmt(stats.get(key)) for key, lab in cls.postfix if key in stats}, refresh=False)
                due_steps = next_ckpt is not None and algo.progress >= next_ckpt
                every_s = 60 * self.spec.checkpoint_minutes
                due_time = every_s > 0 and time.monotonic() - last_ckpt_t >= every_s
                if due_steps or due_time:
                    self.save()
                    last_ckpt_t = time.monotonic()
                    while next_ckpt is not None and next_ckpt <= algo.progress:
                        next_ckpt += every
        except KeyboardInterrupt:
            interrupted = True
            bar.write("interrupted: saving a checkpoint and exporting the current policy")
        finally:
            bar.close()
        final = algo.final_stats()
        if final:
            stats = {**stats, **final}
            self._log(final, writer)
        writer.close()
        self.save()
        parity = algo.export()
        self.plot()
        return {"algo": cls.algo_id, "task_id": self.spec.task_id, "run_dir": str(self.run.path),
                "progress": algo.progress, "unit": cls.unit, "wall_time_s": self.wall_time, "interrupted": interrupted,
                "export": parity, "resumed": self.resumed_from or None,
                **{k: v for k, v in stats.items() if isinstance(v, (int, float))}}

    def _go(self, go: bool) -> bool:
        """Whether to run another iteration; in a data-parallel group, rank 0's answer binds every rank."""
        if self.dist is None:
            return go
        from s2r.policies.distributed import agree

        return agree(go)

    def _learn_worker(self) -> dict[str, Any]:
        """A rank other than 0 iterates (its share of rollouts and the gradient averaging) while rank 0 says so."""
        from s2r.policies.distributed import agree

        stats: dict[str, float] = {}
        while agree(False):
            t0 = time.perf_counter()
            stats = self.algo.iterate()
            self.wall_time += time.perf_counter() - t0
        return {"algo": self.cls.algo_id, "task_id": self.spec.task_id, "rank": self.dist.rank,
                "progress": self.algo.progress, "wall_time_s": self.wall_time,
                **{k: v for k, v in stats.items() if isinstance(v, (int, float))}}

    def _log(self, stats: dict[str, float], writer: Any) -> None:
        for k, v in stats.items():
            if isinstance(v, (int, float)):
                writer.add_scalar(f"{self.cls.algo_id}/{k}", v, self.algo.progress)
        self.history.append({"progress": self.algo.progress, "wall_time": self.wall_time, **stats})

    # ---- persistence --------------------------------------------------------------------------------------------

    def save(self) -> Path:
        """Atomically write the checkpoint (after the algorithm's own data is durable) and the history."""
        self.algo.sync()
        save_atomic({"format": CHECKPOINT_FORMAT, "algo": self.cls.algo_id, "task_id": self.spec.task_id,
                     "progress": self.algo.progress, "wall_time": self.wall_time, "history": self.history,
                     "torch_rng": torch.get_rng_state(), "state": self.algo.state_dict()}, self.run.checkpoint)
        self.run.write_history(self.history)
        return self.run.checkpoint

    def plot(self) -> Path | None:
        """learning_curve.png: the algorithm's own plot, or its curve keys against training wall clock."""
        if self.algo.plot(self.history, self.run.curve_png):
            return self.run.curve_png
        keys = [(k, t) for k, t in self.cls.curve if any(k in r for r in self.history)]
        if not keys:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(keys), figsize=(4.4 * len(keys), 3.6), squeeze=False)
        for ax, (key, title) in zip(axes[0], keys, strict=True):
            rows = [r for r in self.history if key in r]
            ax.plot([r["wall_time"] / 60 for r in rows], [r[key] for r in rows], marker="." if len(rows) < 30 else None)
            ax.set_xlabel("training wall clock (min)")
            ax.set_title(title)
            ax.grid(alpha=0.3)
        fig.suptitle(f"{self.spec.task_id} · {self.cls.algo_id}: {self.algo.progress:,} {self.cls.unit} in "
                     f"{self.wall_time / 60:.1f} min")
        fig.tight_layout()
        fig.savefig(self.run.curve_png, dpi=100)
        plt.close(fig)
        return self.run.curve_png

    def close(self) -> None:
        self.algo.close()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    return str(v)


# ---- building runs ----------------------------------------------------------------------------------------------


def new_run_spec(algo: str, task_id: str, *, task_overrides: dict[str, Any] | None = None,
                 algo_overrides: dict[str, Any] | None = None, num_envs: int | None = None, seed: int | None = None,
                 budget: Budget = Budget(), checkpoint_minutes: float = 5.0) -> RunSpec:
    """A RunSpec for a new run: the task's and the algorithm's configs with typed overrides applied."""
    from s2r.sim import task_config

    cls = get_algorithm(algo)
    tcfg = task_config(task_id, task_overrides)
    cfg = apply_overrides(cls.config_cls(), algo_overrides or {})
    cfg = cls.config_for(cfg, num_envs, seed)
    return RunSpec(algo=algo, task_id=task_id, task_cfg=tcfg, cfg=cfg, seed=int(getattr(cfg, "seed", seed or 0)),
                   budget=budget, checkpoint_minutes=checkpoint_minutes)


def resume_run_spec(run_dir: str | Path, *, algo: str | None = None, task_id: str | None = None,
                    budget: Budget | None = None, algo_overrides: dict[str, Any] | None = None) -> RunSpec:
    """The RunSpec a run folder was started with (config.json), for `--resume`; `algo` and `task_id` must match if given."""
    from s2r.sim import task_config

    run = RunDir(Path(run_dir))
    try:
        saved = run.read_config()
    except RunDirError as exc:
        raise CheckpointError(str(exc)) from exc
    if saved.get("format") != 2:
        # Runs from before the driver: PPO's config.json is readable; the others carried their state elsewhere.
        if "train" in saved and "task_id" in saved:
            train = dict(saved["train"])
            steps, minutes = train.pop("max_env_steps", None), train.pop("max_minutes", 0.0)
            saved = {"algo": "ppo", "task_id": saved["task_id"], "task": saved["task"], "algo_cfg": train,
                     "seed": train.get("seed", 0), "budget": {"steps": steps, "minutes": minutes or None}}
        else:
            raise CheckpointError(f"{run.path} was written before the run driver by a version whose runs cannot be resumed "
                                  "here; start a new run (its policy.onnx still runs)")
    if algo is not None and saved["algo"] != algo:
        raise CheckpointError(f"{run.path} is a '{saved['algo']}' run, not '{algo}'; resume it with --algo {saved['algo']} "
                              "(or leave --algo out)")
    if task_id is not None and saved["task_id"] != task_id:
        raise CheckpointError(f"{run.path} was trained on task '{saved['task_id']}', not '{task_id}'; start a new run or "
                              "pass the matching task")
    cls = get_algorithm(saved["algo"])
    tcfg = from_dict(type(task_config(saved["task_id"])), saved["task"])
    cfg = apply_overrides(from_dict(cls.config_cls, saved["algo_cfg"]), algo_overrides or {})
    old = saved.get("budget") or {}
    if budget is None or (budget.steps is None and budget.minutes is None):
        budget = Budget(steps=old.get("steps"), minutes=old.get("minutes"))
    return RunSpec(algo=saved["algo"], task_id=saved["task_id"], task_cfg=tcfg, cfg=cfg, seed=int(saved.get("seed", 0)),
                   budget=budget, checkpoint_minutes=float(saved.get("checkpoint_minutes", 5.0)))


def train(spec: RunSpec, run_dir: str | Path, *, resume: bool = False, restart: bool = False,
          progress: bool = True, dist: Any = None) -> dict[str, Any]:
    """Build the driver, learn, close. Raises AlgorithmTaskMismatch / CheckpointError / ConfigError before any work."""
    driver = RunDriver(spec, run_dir, resume=resume, restart=restart, progress=progress, dist=dist)
    try:
        return driver.learn()
    finally:
        driver.close()


def export_run(run_dir: str | Path) -> dict[str, Any]:
    """Re-export a run from its config and checkpoint: a small copy of the algorithm, its state, its export.

    Writes only policy.onnx and policy.json (not config.json or the history).
    """
    from dataclasses import fields, replace

    run = RunDir(Path(run_dir))
    spec = resume_run_spec(run.path)
    if not run.checkpoint.is_file():
        raise CheckpointError(f"{run.path} has no checkpoint to export (the run stopped before its first one); "
                              f"continue it with `s2r train --resume {run.path}`")
    ckpt = load_checkpoint(run.checkpoint, spec.task_id, spec.algo)
    cls = get_algorithm(spec.algo)
    # Exporting needs the networks and a probe env, not the training width.
    small = {f.name: min(getattr(spec.cfg, f.name), 8) for f in fields(spec.cfg)
             if f.name in ("num_envs", "eval_episodes") and isinstance(getattr(spec.cfg, f.name), int)}
    algo = cls(RunContext(task_id=spec.task_id, task_cfg=spec.task_cfg, cfg=replace(spec.cfg, **small), run=run,
                          seed=spec.seed, resume=True, progress=False))
    try:
        algo.load_state_dict(ckpt["state"])
        algo.progress = int(ckpt["progress"])
        return algo.export()
    finally:
        algo.close()


__all__ = [
    "AlgorithmTaskMismatch",
    "Budget",
    "CheckpointError",
    "RunDriver",
    "RunSpec",
    "export_run",
    "load_checkpoint",
    "new_run_spec",
    "resume_run_spec",
    "save_atomic",
    "train",
]
