"""Privileged-action curricula: train with sim-only powers, lower them by stages, export without them.

After Mao et al. 2025 (privileged actions for long-horizon manipulation); the schedule is ours. A task
declares its privileged actions in its config (`s2r.sim.tasks.manipulation.privileged`); `Curriculum` is a
small state machine over the success of finished training episodes:

- hold: fewer than `window` episodes seen at this stage, or the windowed success rate in between;
- advance: windowed success >= `advance_at` -> next stage (lower scale), window cleared;
- fall back: windowed success < `fall_back_below` at a stage after the first -> previous stage (higher
  scale), window cleared.

`PrivilegedPPOTrainer` ("ppo-privileged") is PPO with the curriculum setting the env's privilege scale after
every iteration (`PrivilegedSAC`, "sac-privileged", does the same on the off-policy core); it logs the
stage, scale, windowed success and the env steps at which each stage was reached (TensorBoard,
history.json, learning_curve.png). Its export drops the privileged action dimensions from the actor's last
layer, so they are absent from the ONNX graph, and the metadata describes the task without them; the
exported policy is evaluated at scale 0 (`s2r eval`, `bench/privileged.py`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from s2r.policies.algorithm import AlgorithmTaskMismatch, RunContext, register_algorithm
from s2r.policies.networks import ActorCritic
from s2r.policies.offpolicy import ExportedActor
from s2r.policies.ppo import PPOTrainer, TrainConfig, export_model
from s2r.policies.sac import SAC, SACConfig
from torch import nn

HOLD, ADVANCE, FALL_BACK = "hold", "advance", "fall_back"


@dataclass(frozen=True, kw_only=True)
class CurriculumConfig:
    """When the privilege scale moves.

    Attributes:
        stages: Privilege scale of each stage, from the first (most help) to the last; non-increasing, in
            [0, 1]. (1.0, 0.0) removes every privilege at once.
        window: Finished episodes at a stage before any decision, and the length of the success window.
        advance_at: Windowed success rate that moves to the next stage.
        fall_back_below: Windowed success rate under which a stage after the first goes back one stage.
        fades: Per-privilege schedules, "kind:low:high" each: that privilege's scale is (s - low) / (high - low)
            clipped to [0, 1], s the stage's scale, so it fades out over the stages with s in [low, high]
            ("virtual_wrench:0.5:1" removes the wrench by stage scale 0.5; "virtual_wrench:0:0.25" keeps it whole
            until 0.25, then removes it last). Privileges not listed follow s. Empty: one scale for all.
    """

    # Halving steps, finer near zero: on the flat-box lift a first run with (..., 0.25, 0.1, 0.0) advanced
    # to 0.1 quickly and then went back and forth between 0.1 and 0 (a 0.6 N wrench still lifts a light box).
    stages: tuple[float, ...] = (1.0, 0.5, 0.25, 0.12, 0.06, 0.03, 0.015, 0.0)
    window: int = 200
    advance_at: float = 0.6
    fall_back_below: float = 0.05
    fades: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.fade_spans()  # raises on a malformed entry
        if not self.stages or any(not 0.0 <= s <= 1.0 for s in self.stages):
            raise ValueError(f"curriculum.stages {self.stages} must be one or more scales in [0, 1]")
        if any(b > a for a, b in zip(self.stages, self.stages[1:], strict=False)):
            raise ValueError(f"curriculum.stages {self.stages} must not increase: each stage lowers the privileges")
        if self.window < 1:
            raise ValueError(f"curriculum.window must be >= 1 episode, got {self.window}")
        if not 0.0 <= self.fall_back_below < self.advance_at <= 1.0:
            raise ValueError(f"curriculum needs 0 <= fall_back_below ({self.fall_back_below}) < advance_at "
                             f"({self.advance_at}) <= 1")


    def fade_spans(self) -> dict[str, tuple[float, float]]:
        """{kind: (low, high)} from `fades`.

        Raises:
            ValueError: An entry that is not "kind:low:high" with a known kind and 0 <= low < high <= 1, or a kind
                listed twice (one sentence).
        """
        from s2r.sim.tasks.manipulation.privileged import KINDS

        out: dict[str, tuple[float, float]] = {}
        for entry in self.fades:
            parts = str(entry).split(":")
            try:
                kind, low, high = parts[0], float(parts[1]), float(parts[2])
                if len(parts) != 3:
                    raise ValueError
            except (IndexError, ValueError):
                raise ValueError(f"curriculum.fades entry '{entry}' must read kind:low:high, e.g. "
                                 "'virtual_wrench:0.5:1'") from None
            if kind not in KINDS:
                raise ValueError(f"curriculum.fades entry '{entry}' names no privilege; known kinds: {', '.join(KINDS)}")
            if not 0.0 <= low < high <= 1.0:
                raise ValueError(f"curriculum.fades entry '{entry}' needs 0 <= low < high <= 1")
            if kind in out:
                raise ValueError(f"curriculum.fades lists '{kind}' twice; keep one entry per privilege")
            out[kind] = (low, high)
        return out


def kind_scales(scale: float, kinds: Iterable[str], spans: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Each privilege's scale at stage scale `scale`: its fade span's (see `CurriculumConfig.fades`), else `scale`."""
    out = {}
    for kind in kinds:
        low, high = spans.get(kind, (0.0, 1.0))
        out[kind] = float(np.clip((scale - low) / (high - low), 0.0, 1.0))
    return out


class Curriculum:
    """The stage state machine (see the module docstring). Feed it finished episodes' success flags."""

    def __init__(self, cfg: CurriculumConfig) -> None:
        self.cfg = cfg
        self.stage = 0
        self.window: deque[bool] = deque(maxlen=cfg.window)
        self.advances = 0
        self.fall_backs = 0

    @property
    def scale(self) -> float:
        """The privilege scale of the current stage."""
        return self.cfg.stages[self.stage]

    @property
    def success_rate(self) -> float:
        """Success rate over the current window (NaN while it is empty)."""
        return float(np.mean(self.window)) if self.window else float("nan")

    @property
    def final(self) -> bool:
        """True at the last stage."""
        return self.stage == len(self.cfg.stages) - 1

    def observe(self, successes: Iterable[bool]) -> str:
        """Add finished episodes' success flags; returns "advance", "fall_back" or "hold".

        At most one stage change per call; the window restarts after a change, so the next decision waits
        for `window` episodes at the new stage.
        """
        self.window.extend(bool(s) for s in successes)
        if len(self.window) < self.cfg.window:
            return HOLD
        rate = self.success_rate
        if rate >= self.cfg.advance_at and not self.final:
            self.stage += 1
            self.advances += 1
            self.window.clear()
            return ADVANCE
        if rate < self.cfg.fall_back_below and self.stage > 0:
            self.stage -= 1
            self.fall_backs += 1
            self.window.clear()
            return FALL_BACK
        return HOLD

    def state_dict(self) -> dict[str, Any]:
        """Stage, window and counters (for resume)."""
        return {"stage": self.stage, "window": list(self.window), "advances": self.advances,
                "fall_backs": self.fall_backs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`."""
        self.stage = int(state["stage"])
        self.window = deque((bool(s) for s in state["window"]), maxlen=self.cfg.window)
        self.advances, self.fall_backs = int(state["advances"]), int(state["fall_backs"])


@dataclass(frozen=True, kw_only=True)
class PrivilegedTrainConfig(TrainConfig):
    """A PPO run with a privileged-action curriculum.

    Attributes:
        curriculum: The stage schedule.
    """

    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)


def task_actor(model: ActorCritic, obs_dims: dict[str, int], task_dims: int) -> ActorCritic:
    """A copy of `model` whose actor outputs only the first `task_dims` actions (the privileged rows are cut out
    of the last layer's weights, so they are absent from any graph exported from it, not zeroed)."""
    if not 0 < task_dims <= model.action_dim:
        raise ValueError(f"task_dims {task_dims} must lie in 1..{model.action_dim}")
    out = ActorCritic(obs_dims, task_dims, model.cfg)
    state = model.state_dict()
    last = f"actor.{len(model.actor) - 1}"
    for key in (f"{last}.weight", f"{last}.bias", "log_std"):
        state[key] = state[key][:task_dims].clone()
    out.load_state_dict(state)
    return out.eval()


class _CurriculumMixin:
    """The curriculum glue both privileged trainers share: stage decisions, logging, resume, plot."""

    ctx: RunContext
    env: Any
    progress: int

    def _init_curriculum(self, cfg: CurriculumConfig) -> None:
        self.curriculum = Curriculum(cfg)
        self._spans = cfg.fade_spans()
        self._kinds = tuple(p.kind for p in self.ctx.task_cfg.privileged)
        declared = set(self._kinds)
        missing = sorted(set(self._spans) - declared)
        if missing:
            raise AlgorithmTaskMismatch(f"curriculum.fades names {', '.join(missing)}, which {self.ctx.task_id} does not "
                                        f"declare (it declares {', '.join(sorted(declared))}): drop those entries")
        self._set_scale()
        self.task_dims = self.env.spec.action_dim - int(self.env.spec.extras.get("privileged_action_dims", 0))
        self.stage_steps: dict[int, int] = {0: 0}  # stage -> env steps when first reached
        self._finished: list[bool] = []

    def _set_scale(self) -> None:
        """Give the env the current stage's scale, per privilege when `fades` spreads them."""
        scales = kind_scales(self.curriculum.scale, self._kinds, self._spans)
        self.env.set_privilege_scale(scales)
        self._kind_scales = scales

    def _on_episodes(self, episode: dict[str, Any] | None) -> None:
        if episode:
            self._finished.extend(bool(s) for s in episode["success"])

    def _decide(self, stats: dict[str, float]) -> dict[str, float]:
        """One curriculum decision on the episodes that ended since the last one; adds its statistics."""
        event = self.curriculum.observe(self._finished)
        self._finished = []
        if event != HOLD:
            self._set_scale()
            self.stage_steps.setdefault(self.curriculum.stage, self.progress)
        if self._spans:
            stats.update({f"scale_{k}": v for k, v in self._kind_scales.items()})
        stats.update({"privilege_scale": self.curriculum.scale, "curriculum_stage": float(self.curriculum.stage),
                      "window_success_rate": self.curriculum.success_rate,
                      "curriculum_event": {HOLD: 0.0, ADVANCE: 1.0, FALL_BACK: -1.0}[event],
                      "curriculum_fall_backs": float(self.curriculum.fall_backs)})
        return stats

    def _stage_stats(self) -> dict[str, float]:
        return {f"steps_to_stage_{k}": float(v) for k, v in sorted(self.stage_steps.items())}

    def _curriculum_state(self) -> dict[str, Any]:
        return {"curriculum": self.curriculum.state_dict(), "stage_steps": dict(self.stage_steps)}

    def _load_curriculum_state(self, state: dict[str, Any]) -> None:
        self.curriculum.load_state_dict(state["curriculum"])
        self.stage_steps = {int(k): int(v) for k, v in state["stage_steps"].items()}
        self._set_scale()

    def plot(self, history: list[dict[str, Any]], path: Any) -> bool:
        """Training success and the privilege scale against env steps, stage changes marked."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [r for r in history if "privilege_scale" in r]
        if not rows:
            return False
        x = np.array([r["progress"] for r in rows], dtype=float)
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(x, [r.get("mean_success", np.nan) for r in rows], label="training success (recent episodes)")
        ax.plot(x, [r.get("window_success_rate", np.nan) for r in rows], label="curriculum window success", alpha=0.6)
        ax.step(x, [r["privilege_scale"] for r in rows], where="post", label="privilege scale", color="k")
        for r in rows:
            if r.get("curriculum_event", 0.0) != 0.0:
                ax.axvline(r["progress"], color="g" if r["curriculum_event"] > 0 else "r", alpha=0.3, lw=0.8)
        ax.set_xlabel("env steps")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="best", fontsize=8)
        ax.set_title(f"privileged-action curriculum ({self.ctx.task_id})")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return True


def _require_privileges(algo_id: str, ctx: RunContext) -> None:
    if not getattr(ctx.task_cfg, "privileged", None):
        raise AlgorithmTaskMismatch(f"{algo_id} needs a task that declares privileged actions; '{ctx.task_id}' "
                                    "declares none: use a '-Privileged' task (e.g. Panda-Lift-FlatBox-Privileged) "
                                    "or set the task config's `privileged` list")


@register_algorithm
class PrivilegedPPOTrainer(_CurriculumMixin, PPOTrainer):
    """PPO on a task with privileged actions, whose scale a `Curriculum` lowers; exports without them."""

    algo_id = "ppo-privileged"
    config_cls = PrivilegedTrainConfig
    default_steps = 20_000_000
    curve = (("mean_success", "training success rate"), ("privilege_scale", "privilege scale"),
             ("mean_return", "mean episode return"))
    postfix = (("env_steps_per_s", "sps"), ("mean_success", "succ"), ("privilege_scale", "scale"),
               ("curriculum_stage", "stage"))
    description = "PPO with a privileged-action curriculum (virtual forces / relaxed constraints that anneal away)"
    data_parallel = False

    def __init__(self, ctx: RunContext) -> None:
        _require_privileges(self.algo_id, ctx)
        super().__init__(ctx)
        self._init_curriculum(ctx.cfg.curriculum)

    def iterate(self) -> dict[str, float]:
        """One PPO iteration, then one curriculum decision on the episodes that ended in it."""
        return self._decide(super().iterate())

    def final_stats(self) -> dict[str, float]:
        return self._stage_stats()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self._curriculum_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._load_curriculum_state(state)

    def export(self) -> dict[str, float]:
        actor = task_actor(self.alg.model, self.env.obs_dims, self.task_dims)
        deploy_cfg = self.ctx.task_cfg.without_privileges()
        return export_model(actor, self.ctx.task_id, deploy_cfg, self.ctx.run.path, self.cfg)


@dataclass(frozen=True, kw_only=True)
class PrivilegedSACConfig(SACConfig):
    """A SAC run (shared off-policy core) with a privileged-action curriculum.

    Attributes:
        curriculum: The stage schedule.
    """

    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)


class _TaskColumns(nn.Module):
    """An exported off-policy actor whose last layer keeps only the task's action rows (mean rows first)."""

    def __init__(self, exported: ExportedActor, task_dims: int) -> None:
        super().__init__()
        last = [m for m in exported.actor.modules() if isinstance(m, nn.Linear)][-1]
        cut = nn.Linear(last.in_features, task_dims)
        with torch.no_grad():
            cut.weight.copy_(last.weight[:task_dims])
            cut.bias.copy_(last.bias[:task_dims])
        # Swap the module in place inside the (Sequential) actor.
        for parent in exported.actor.modules():
            for name, child in parent.named_children():
                if child is last:
                    setattr(parent, name, cut)
        exported.action_dim = task_dims
        self.exported = exported

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.exported(obs)


@register_algorithm
class PrivilegedSAC(_CurriculumMixin, SAC):
    """SAC on a task with privileged actions, whose scale a `Curriculum` lowers; evaluates at scale 0, exports
    without them."""

    algo_id = "sac-privileged"
    config_cls = PrivilegedSACConfig
    curve = (("mean_success", "training success rate"), ("privilege_scale", "privilege scale"),
             ("eval_return", "evaluation return at scale 0"))
    postfix = (("mean_return", "ret"), ("privilege_scale", "scale"), ("curriculum_stage", "stage"))
    description = "SAC (off-policy core) with a privileged-action curriculum"

    def __init__(self, ctx: RunContext) -> None:
        _require_privileges(self.algo_id, ctx)
        super().__init__(ctx)
        self._init_curriculum(ctx.cfg.curriculum)
        self._successes: deque[bool] = deque(maxlen=200)

    def _on_episodes(self, episode: dict[str, Any] | None) -> None:
        super()._on_episodes(episode)
        if episode:
            self._successes.extend(bool(s) for s in episode["success"])

    def iterate(self) -> dict[str, float]:
        stats = super().iterate()
        if self._successes:
            stats["mean_success"] = float(np.mean(self._successes))
        return self._decide(stats)

    def evaluate(self) -> dict[str, float]:
        from s2r.sim import make

        if self.eval_env is None and self.cfg.eval_episodes > 0:
            # Judged as deployed: every privilege at scale 0 (its columns then have no effect).
            self.eval_env = make(self.ctx.task_id, self.cfg.eval_episodes, cfg=self.ctx.task_cfg,
                                 seed=self.ctx.seed + 10_000)
            self.eval_env.set_privilege_scale(0.0)
        return super().evaluate()

    def final_stats(self) -> dict[str, float]:
        return {**super().final_stats(), **self._stage_stats()}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self._curriculum_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._load_curriculum_state(state)

    def export(self) -> dict[str, Any]:
        from s2r.policies.export import build_metadata, export_onnx_checked
        from s2r.sim import make
        from s2r.sim.env import sample_obs

        deploy_cfg = self.ctx.task_cfg.without_privileges()
        actor = _TaskColumns(ExportedActor(self.learner), self.task_dims).eval()
        env = make(self.ctx.task_id, 4, cfg=deploy_cfg, seed=self.ctx.seed + 20_000)
        try:
            parity = sample_obs(env, 16, seed=self.ctx.seed)["policy"]
            spec = env.spec
        finally:
            env.close()
        obs_dim = parity.shape[1]
        meta = build_metadata(spec, self.ctx.task_id, obs_dim, algo=self.algo_id, task_cfg=deploy_cfg)
        return export_onnx_checked(actor, (torch.zeros(1, obs_dim),), ["obs"], ["actions"], self.ctx.run.path,
                                   {"obs": parity}, meta)


def replace_stages(cfg: PrivilegedTrainConfig, stages: tuple[float, ...]) -> PrivilegedTrainConfig:
    """`cfg` with another stage schedule (e.g. (1.0, 0.0): privileges removed all at once)."""
    return replace(cfg, curriculum=replace(cfg.curriculum, stages=stages))
