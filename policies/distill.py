"""Distil a privileged teacher into a history-based student ("distill"): RMA, DAgger or HIB.

    s2r train Go1-Velocity-Flat --algo ppo-teacher                      # writes runs/.../teacher.pt
    s2r train Go1-Velocity-Flat --algo distill --set history_length=30 \\
        --train-set student=hib --train-set teacher=<teacher run folder>

The student reads only the `policy` group with the history the task stacks (`history_length`), so its
ONNX export runs on the robot, whose `ObservationBuilder` stacks the frames in the same order (oldest
first; policy.json records the history length). On load the teacher's observation groups are checked
against the task (`s2r.policies.teacher.check_teacher_groups`).

- rma: the student acts (history encoder + the teacher's frozen actor head); the teacher's latent of each
  visited state is the regression target (MSE); `epochs` passes of Adam over each rollout.
- dagger: the student (a history MLP) acts, the teacher labels every step with its action; MSE on actions,
  1 epoch, Adam 1e-3 per rollout (as rsl_rl's Distillation).
- hib: PPO (a fixed step size) through the HIB student's actor, with the bottleneck + regression terms
  (`s2r.policies.students.hib_loss`, weight `beta` on the KL) added to every minibatch. The actor head
  (started as the teacher's) steps at `hib_actor_lr_scale` times PPO's rate: 0 (default) keeps it the
  teacher's, so the RL term moves only the history encoder; 1 is the first benchmark's joint update.
Networks and losses live in `s2r.policies.students`.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from s2r.policies.algorithm import Algorithm, AlgorithmTaskMismatch, RunContext, register_algorithm
from s2r.policies.ppo import PPO, PPOConfig, _episode_rows
from s2r.policies.students import DAggerStudent, HIBModel, RMAStudent, hib_loss, latent_regression
from s2r.policies.teacher import LoadedTeacher, TeacherError, check_teacher_groups, load_teacher

STUDENTS = ("rma", "dagger", "hib")


def _hib_ppo() -> PPOConfig:
    # A fixed step size: the KL-adaptive one reacts to the latent noise as if the policy had moved.
    return PPOConfig(schedule="fixed", learning_rate=3e-4)


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """A distillation run.

    Attributes:
        student: "rma", "dagger" or "hib".
        teacher: Run folder of a `--algo ppo-teacher` run (or its teacher.pt).
        num_envs: Parallel envs.
        seed: Seed of envs and networks.
        steps_per_env: Control steps per env in each rollout.
        encoder_hidden: Hidden widths of the history encoder (rma, hib).
        dagger_hidden: Hidden widths of the DAgger student's MLP.
        activation: Hidden activation.
        learning_rate: Adam step of the rma and dagger students.
        epochs: Passes over each rollout (rma, dagger).
        minibatches: Minibatches per pass (rma, dagger).
        beta: Weight of the KL bottleneck (hib); 0 leaves RMA's regression next to the PPO loss.
        init_latent_std: Starting standard deviation of q(z | history) (hib).
        hib_actor_lr_scale: The hib actor head's and action std's step size as a fraction of PPO's (0: frozen
            at the teacher's, the RL loss reaches only the encoder; 1: everything at one rate, as first run).
        hib_ppo: The PPO settings of the hib student (its `policy` section and `steps_per_env` are unused: the
            model is built here and every student rolls out `steps_per_env` steps).
        save_every: Iterations between checkpoints.
        export_parity_steps: Probe-env steps whose observations check the ONNX export.
        torch_threads: torch intra-op threads (0: torch's default).
    """

    student: str = "rma"
    teacher: str = ""
    num_envs: int = 256
    seed: int = 0
    steps_per_env: int = 24
    encoder_hidden: tuple[int, ...] = (256, 128)
    dagger_hidden: tuple[int, ...] = (256, 128, 64)
    activation: str = "elu"
    learning_rate: float = 1e-3
    epochs: int = 1
    minibatches: int = 4
    beta: float = 1e-3
    init_latent_std: float = 0.1
    hib_actor_lr_scale: float = 0.0
    hib_ppo: PPOConfig = field(default_factory=_hib_ppo)
    save_every: int = 50
    export_parity_steps: int = 20
    torch_threads: int = 0

    def __post_init__(self) -> None:
        if self.student not in STUDENTS:
            raise ValueError(f"distill student '{self.student}' is unknown; choose one of {', '.join(STUDENTS)}")
        if self.beta < 0:
            raise ValueError(f"distill beta must be >= 0, got {self.beta}")
        if not 0.0 <= self.hib_actor_lr_scale <= 1.0:
            raise ValueError(f"distill hib_actor_lr_scale must be in [0, 1] (a fraction of PPO's step size), got "
                             f"{self.hib_actor_lr_scale}")


@register_algorithm
class DistillTrainer(Algorithm):
    """Roll the student out, label with the teacher, update; exports the student (history and all) to ONNX."""

    algo_id = "distill"
    config_cls = DistillConfig
    default_steps = 5_000_000
    curve = (("mean_return", "mean episode return"), ("action_mse", "action MSE to the teacher"),
             ("mean_vel_error", "velocity error (m/s)"))
    postfix = (("env_steps_per_s", "sps"), ("mean_return", "ret"), ("action_mse", "amse"), ("loss", "loss"))
    description = "distil a ppo-teacher into a history-based student (student=rma|dagger|hib) that exports to ONNX"

    def __init__(self, ctx: RunContext) -> None:
        from s2r.sim import make

        cfg: DistillConfig = ctx.cfg
        self.ctx, self.cfg = ctx, cfg
        try:
            self.teacher: LoadedTeacher = load_teacher(cfg.teacher)
        except TeacherError as exc:
            raise AlgorithmTaskMismatch(str(exc)) from None
        self.env = make(ctx.task_id, cfg.num_envs, cfg=ctx.task_cfg, seed=cfg.seed)
        try:
            self._build()
        except BaseException:
            self.env.close()
            raise
        self.checkpoint_every = cfg.save_every * cfg.num_envs * cfg.steps_per_env
        self.progress = 0
        self.iteration = 0
        self._obs: dict[str, torch.Tensor] | None = None
        self._episodes: dict[str, deque[float]] = {}

    def _build(self) -> None:
        cfg, ctx, spec, t = self.cfg, self.ctx, self.env.spec, self.teacher
        try:
            check_teacher_groups(t, spec, ctx.task_id)
        except TeacherError as exc:
            raise AlgorithmTaskMismatch(str(exc)) from None
        if tuple(t.model.base_cfg.actor_obs) != ("policy",):
            raise AlgorithmTaskMismatch(f"teacher {t.path} reads actor groups {list(t.model.base_cfg.actor_obs)}; "
                                        "the students replace only its privileged encoder, so its actor must read "
                                        "['policy'] alone")
        pol = spec.groups["policy"]
        if pol.history < 2:
            raise AlgorithmTaskMismatch(f"distill students read a history of the policy group, but task "
                                        f"'{ctx.task_id}' stacks {pol.history} frame; set the task's history_length "
                                        "(e.g. --set history_length=30)")
        frame, hist = pol.frame_dim, pol.history
        if cfg.student == "hib":
            self.model = HIBModel(t, frame, hist, cfg.encoder_hidden, cfg.activation, cfg.init_latent_std)
            ppo_cfg = replace(cfg.hib_ppo, steps_per_env=cfg.steps_per_env)  # one rollout length for every student
            self.alg = PPO(self.env.obs_dims, spec.action_dim, cfg.num_envs, ppo_cfg, model=self.model,
                           extra_loss=self._hib_extra, param_groups=self.model.param_groups(cfg.hib_actor_lr_scale))
        else:
            cls = RMAStudent if cfg.student == "rma" else DAggerStudent
            hidden = cfg.encoder_hidden if cfg.student == "rma" else cfg.dagger_hidden
            self.model = cls(t.model, frame, hist, hidden, cfg.activation)
            self.optimizer = torch.optim.Adam(self.model.trainable(), lr=cfg.learning_rate)

    # ---- HIB's extra loss, added by PPO to every minibatch ----------------------------------------------------

    def _hib_extra(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        m = self.model
        mu, log_sigma = m.encode(b["actor_obs"])
        with torch.no_grad():
            target = self.teacher.model.latent_from_privileged(m.privileged(b["critic_obs"]))
        loss, stats = hib_loss(mu, log_sigma, target, self.cfg.beta)
        stats["latent_std"] = float(torch.exp(log_sigma.detach()).mean())
        return loss, stats

    # ---- the loop -------------------------------------------------------------------------------------------

    def _reset(self) -> None:
        obs = self.env.reset(seed=self.cfg.seed + self.iteration)
        if hasattr(self.env, "randomize_episode_start"):
            self.env.randomize_episode_start()
        self._obs = {k: torch.as_tensor(v) for k, v in obs.items()}

    def iterate(self) -> dict[str, float]:
        """One rollout by the student (the teacher labelling every step), then the student's update."""
        if self._obs is None:
            self._reset()
        cfg, env, t = self.cfg, self.env, self.teacher
        hib = cfg.student == "hib"
        t0 = time.perf_counter()
        xs, targets, amse = [], [], []
        info: dict[str, Any] = {}
        for _ in range(cfg.steps_per_env):
            obs = self._obs
            with torch.no_grad():
                tin = t.actor_input(obs)
                teacher_action = t.model.act_mean(tin)
                if hib:
                    actions = self.alg.act(obs)
                    mine = self.model.act_mean(obs["policy"])
                else:
                    actions = mine = self.model.act_mean(obs["policy"])
                    xs.append(obs["policy"])
                    targets.append(t.model.latent(tin) if cfg.student == "rma" else teacher_action)
                amse.append(float(((mine - teacher_action) ** 2).mean()))
            obs_np, rew, term, trunc, info = env.step(actions.numpy())
            self._obs = {k: torch.as_tensor(v) for k, v in obs_np.items()}
            if hib:
                final = None
                if "final_obs" in info:
                    final = self.model.critic_input({k: torch.as_tensor(v) for k, v in info["final_obs"].items()})
                self.alg.process_step(torch.as_tensor(rew), torch.as_tensor(term), torch.as_tensor(trunc), final)
            for key, values in _episode_rows(info.get("episode")):
                self._episodes.setdefault(key, deque(maxlen=200)).extend(values)
        t_collect = time.perf_counter() - t0
        if hib:
            self.alg.compute_returns(self._obs)
            self.model.latent_noise = True
            try:
                stats = self.alg.update()
            finally:
                self.model.latent_noise = False
            stats["loss"] = stats.get("latent_mse", 0.0)
        else:
            stats = self._imitate(torch.cat(xs), torch.cat(targets))
        dt = time.perf_counter() - t0
        per_iter = cfg.num_envs * cfg.steps_per_env
        self.iteration += 1
        self.progress += per_iter
        stats.update({"action_mse": float(np.mean(amse)), "env_steps_per_s": per_iter / dt,
                      "collect_fraction": t_collect / dt})
        names = {"return": "mean_return", "length": "mean_episode_length", "vel_error": "mean_vel_error", "fell": "fall_rate"}
        for key, values in self._episodes.items():
            stats[names.get(key, f"mean_{key}")] = float(np.mean(values))
        return stats

    def _imitate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """`epochs` passes of minibatch Adam on MSE(student output, teacher label) over one rollout."""
        cfg, m = self.cfg, self.model
        out_fn = m.latent if cfg.student == "rma" else m.act_mean
        n = len(x)
        size = max(1, n // cfg.minibatches)
        total, k = 0.0, 0
        for _ in range(cfg.epochs):
            perm = torch.randperm(n)
            for i in range(cfg.minibatches):
                idx = perm[i * size:(i + 1) * size]
                loss = latent_regression(out_fn(x[idx]), y[idx])  # the MSE, on latents (rma) or actions (dagger)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                total, k = total + loss.item(), k + 1
        return {"loss": total / max(k, 1)}

    # ---- state and export ------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        if self.cfg.student == "hib":
            return {"algo": self.alg.state_dict(), "iteration": self.iteration}
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "iteration": self.iteration}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.cfg.student == "hib":
            self.alg.load_state_dict(state["algo"])
        else:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state["iteration"])

    def export(self) -> dict[str, float]:
        """policy.onnx + policy.json: the student on the `policy` group with its history (parity-checked)."""
        from s2r.policies.export import export_policy
        from s2r.sim import make
        from s2r.sim.env import sample_obs

        cfg, ctx = self.cfg, self.ctx
        probe = make(ctx.task_id, 8, cfg=ctx.task_cfg, seed=cfg.seed + 12345)
        try:
            obs = sample_obs(probe, cfg.export_parity_steps, seed=cfg.seed)
            spec = probe.spec
        finally:
            probe.close()
        self.model.eval()
        try:
            return export_policy(self.model, spec, ctx.task_id, ctx.run.path, obs["policy"], algo="distill",
                                 task_cfg=ctx.task_cfg)
        finally:
            self.model.train()

    def close(self) -> None:
        self.env.close()
