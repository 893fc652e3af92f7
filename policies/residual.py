"""Residual off-policy RL on a frozen behaviour-cloning base (after "Residual Off-Policy RL for Finetuning
Behavior Cloning Policies").

The BC policy stays a black box: every step it proposes an action (its chunks temporally ensembled), and a
small actor sees (observation, base action) and adds a bounded correction:

    action = clip(base(obs) + scale * residual(obs, base_action), -1, 1),  residual in [-1, 1]

The actor's last layer starts at zero, so training starts exactly at the base policy; the critics (an
ensemble, `s2r.policies.offpolicy`) score the combined action and warm up before the actor moves. Rewards
are the task's sparse success. The demos the base was cloned from fill a second buffer that each batch
samples half from (RLPD's symmetric sampling), which gives the critics successes to learn from at once.

`--algo finetune` is the comparison the paper makes: the same learner trains the BC network itself (its
first predicted action, no residual, no ensembling) from the same start.

The run driver writes the run folder (checkpoint, history.json with `success_rate` rows, TensorBoard,
learning_curve.png); this algorithm adds replay/ (written as transitions arrive, so a killed run resumes
without losing any, checkpoint or not) and the export: one ONNX graph computing base + scale * residual
(see `s2r.policies.bc.ChunkedPolicyGraph`).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from s2r.policies.algorithm import (
    Algorithm,
    AlgorithmTaskMismatch,
    RunContext,
    refuse_image_encoder,
    register_algorithm,
)
from s2r.policies.bc import BC_CHECKPOINT, ChunkedBC, ChunkedPolicyGraph, export_chunked, load_bc
from s2r.policies.evaluate import success_episodes
from s2r.policies.offpolicy import ExportedActor, OffPolicyLearner, residual_compose
from s2r.policies.replay import ReplayBuffer
from s2r.policies.residual_base import (
    BASE_GROUP,
    BasePolicy,
    FilteredResidual,
    FirstActionActor,
    demos_with_base,
    exportable_filter,
    first_action_bc,
)
from s2r.policies.residual_config import ResidualConfig
from s2r.real.episodes import Episode, read_episodes
from s2r.real.metadata import ResidualSection

# The exported graph runs the base, the residual actor and (Q-filter) a 10-head critic ensemble with layer norms;
# float32 reassociation between torch and onnxruntime reached 1.0e-5 on CI, on actions of order 1.
PARITY_TOL = 5e-5


def demo_stats(episodes: list[Episode], groups: list[str], cfg: ResidualConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fixed input normalisation from the demos, group -> (centre, spread), with the config's lower bounds.

    Fixed, because the online data's statistics drift as the policy improves. Observation groups are
    standardised, their std bounded below by `min_obs_std`; the base action is mapped from its demo range
    to [-1, 1], the range bounded below by `min_action_range` (both bounds: the paper's safeguards against a
    near-constant demo dimension turning into a huge input).
    """
    stats = {}
    for g in groups:
        x = np.concatenate([e.obs[g] for e in episodes])
        std = np.maximum(x.std(0), cfg.min_obs_std) if cfg.min_obs_std > 0 else x.std(0) + 1e-3
        stats[g] = (x.mean(0), std)
    if cfg.min_action_range > 0 and episodes and BASE_GROUP in episodes[0].obs:
        a = np.concatenate([e.obs[BASE_GROUP] for e in episodes])
        lo, hi = a.min(0), a.max(0)
        stats[BASE_GROUP] = ((lo + hi) / 2, np.maximum(hi - lo, cfg.min_action_range) / 2)
    return stats


@register_algorithm
class ResidualRL(Algorithm):
    """Collect with base + residual, learn off-policy, evaluate; the driver checkpoints, exports and plots."""

    algo_id = "residual"
    config_cls = ResidualConfig
    default_steps = 100_000
    durable_replay = True
    curve = (("success_rate", "success rate"),)
    postfix = (("success_rate", "success"),)
    description = "residual off-policy RL on a frozen behaviour-cloning base (--base <bc run>)"
    finetune = False

    @classmethod
    def config_for(cls, cfg: ResidualConfig, num_envs: int | None, seed: int | None) -> ResidualConfig:
        return replace(super().config_for(cfg, num_envs, seed), finetune=cls.finetune)

    def __init__(self, ctx: RunContext) -> None:
        from s2r.sim import make

        self.ctx = ctx
        self.cfg = cfg = ctx.cfg
        refuse_image_encoder(self.algo_id, cfg.learner)
        self.task_id = ctx.task_id
        if not cfg.base:
            raise AlgorithmTaskMismatch(f"--algo {self.algo_id} needs --base <behaviour-cloning run> "
                                        f"(make one with `s2r train {ctx.task_id} --algo bc`)")
        if cfg.finetune != self.finetune:
            raise AlgorithmTaskMismatch(f"--algo {self.algo_id} runs with finetune={self.finetune}; "
                                        f"use --algo {'finetune' if cfg.finetune else 'residual'} instead")
        self.base_dir = Path(cfg.base)
        self.run_dir = ctx.run.path
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        bc, self.bc_cfg, self.bc_ckpt = load_bc(self.base_dir)
        if self.bc_ckpt["task_id"] != ctx.task_id:
            raise AlgorithmTaskMismatch(f"base policy {self.base_dir / BC_CHECKPOINT} was cloned on "
                                        f"'{self.bc_ckpt['task_id']}', not '{ctx.task_id}'")
        self.checkpoint_every = cfg.checkpoint_every
        self.tcfg = ctx.task_cfg
        self.env = make(ctx.task_id, cfg.num_envs, cfg=self.tcfg, seed=cfg.seed)
        self.eval_env = make(ctx.task_id, cfg.eval_episodes, cfg=self.tcfg, seed=cfg.seed + 10_000)
        try:
            self._build(bc, cfg)
        except BaseException:
            self.env.close()
            self.eval_env.close()
            raise

    def _build(self, bc: ChunkedBC, cfg: ResidualConfig) -> None:
        spec, task_id = self.env.spec, self.task_id
        if bc.action_dim != spec.action_dim or bc.obs_dim != self.env.obs_dims["policy"]:
            raise AlgorithmTaskMismatch(f"base policy {self.base_dir} maps {bc.obs_dim} observations to {bc.action_dim} "
                                        f"actions; task {task_id} has {self.env.obs_dims['policy']} and {spec.action_dim}")
        self.bc = bc
        if cfg.dim_scale and len(cfg.dim_scale) != spec.action_dim:
            raise ValueError(f"ResidualConfig.dim_scale holds {len(cfg.dim_scale)} values but task {task_id} has "
                             f"{spec.action_dim} actions; give one per action or leave it empty to use `scale`")
        # obs_dims holds the vector groups only: an image group the task may render is not read by this learner.
        self.obs_dims = {**self.env.obs_dims, BASE_GROUP: spec.action_dim}
        demos = None
        stats = None
        demo_dir = self._demo_dir()
        if cfg.use_demos and demo_dir:
            dims = {g: d for g, d in self.obs_dims.items() if g != BASE_GROUP}
            _, eps = read_episodes(demo_dir, task=task_id, obs_dims=dims, action_dim=spec.action_dim)
            eps = demos_with_base(eps, bc, self.bc_cfg.ensemble_m, relabel=cfg.relabel_demos,
                                  reset_history=cfg.reset_base_history)
            demos = ReplayBuffer.from_episodes(eps)
            stats = demo_stats(eps, [g for g in ("policy", "privileged") if g in self.obs_dims], cfg)
        self.demos = demos
        lcfg = cfg.learner
        if cfg.finetune:
            # The BC net has its own normaliser inside; it reads raw `policy` observations and no base action.
            # No Q-filter: its anchor is the actor output 0, the base for a residual but a zero action here.
            lcfg = replace(lcfg, actor_obs=("policy",), zero_init_actor=False, q_filter=None, q_filter_bc=0.0)
            self.learner = OffPolicyLearner(self.obs_dims, spec.action_dim, lcfg, actor=FirstActionActor(self._trainable_bc()))
        else:
            self._gain = torch.ones(())  # the ramp's factor on the residual's bound (`ramp_steps`), set in place
            self.learner = OffPolicyLearner(self.obs_dims, spec.action_dim, lcfg,
                                            compose=residual_compose(cfg.action_scale(), BASE_GROUP, self._gain),
                                            obs_stats=stats)
        self._check_replay_owner()
        self.buffer = ReplayBuffer(self.obs_dims, spec.action_dim, cfg.buffer_capacity, num_envs=cfg.num_envs,
                                   directory=self.ctx.run.replay)
        self.progress = 0
        self._evaluated_at = -1
        self._owed = 0.0  # fractional updates carried over between steps
        self._obs: dict[str, np.ndarray] | None = None
        self._metrics: dict[str, float] = {}

    def _demo_dir(self) -> str | None:
        """The demos the base was cloned from: named in bc.pt (or, for older bases, in their config.json)."""
        if self.bc_ckpt.get("demos"):
            return str(self.bc_ckpt["demos"])
        legacy = self.base_dir / "config.json"
        return json.loads(legacy.read_text()).get("demos") if legacy.is_file() else None

    def _check_replay_owner(self) -> None:
        """A replay folder belongs to one task and base: transitions of another must never mix in."""
        owner = {"task_id": self.task_id, "base": str(self.base_dir.resolve()), "finetune": self.cfg.finetune}
        path = self.ctx.run.replay / "owner.json"
        if path.is_file():
            have = json.loads(path.read_text())
            diff = [k for k in owner if have.get(k) != owner[k]]
            if diff:
                raise AlgorithmTaskMismatch(f"{self.ctx.run.replay} holds transitions of {diff[0]} {have.get(diff[0])!r}, "
                                            f"not {owner[diff[0]]!r}; use another run folder")
        else:
            self.ctx.run.replay.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(owner))

    def _trainable_bc(self) -> ChunkedBC:
        import copy

        return copy.deepcopy(self.bc).requires_grad_(True).train()

    # ---- acting -------------------------------------------------------------------------------------------

    def _with_base(self, obs: dict[str, np.ndarray], base_action: np.ndarray) -> dict[str, np.ndarray]:
        return {**{g: v for g, v in obs.items() if g in self.obs_dims}, BASE_GROUP: base_action}

    def ramp(self) -> float:
        """The residual's gain now (`ramp_steps`: 0 -> 1 from the actor's first update), also set into the compose."""
        cfg, lcfg = self.cfg, self.learner.cfg
        if cfg.finetune or cfg.ramp_steps <= 0:
            return 1.0
        # Counted in updates (in the checkpoint) rather than env steps: the actor's start is where the updates are.
        g = min(1.0, max(0, self.learner.updates - lcfg.critic_warmup_updates) / max(1.0, cfg.ramp_steps * lcfg.utd_ratio))
        self._gain.fill_(g)
        return g

    def effective_scale(self) -> float | tuple[float, ...]:
        """The residual's bound as the policy applies it now: `scale` (or `dim_scale`) times the ramp's gain."""
        g, s = self.ramp(), self.cfg.action_scale()
        return s * g if isinstance(s, float) else tuple(v * g for v in s)

    def evaluate(self, episodes_env: Any = None) -> dict[str, float]:
        """Success rate of the current deterministic policy, one episode per eval env.

        With the learner's Q-filter on, the policy is filtered; `success_rate_unfiltered` is then the same
        episodes without it (the actor alone), which is also what the exported graph does when the critics
        read privileged observations and the filter cannot go into it.
        """
        gain = self.ramp()
        out = self._success(episodes_env, filtered=True)
        if self.cfg.ramp_steps > 0 and not self.cfg.finetune:
            out["residual_gain"] = gain
        lcfg = self.learner.cfg
        if lcfg.q_filter is not None and not self.cfg.finetune:
            # Before the first actor update a zero-initialised residual is exactly 0 and the filter changes
            # nothing: the same number, without a second pass over the episodes.
            moved = self.learner.updates > lcfg.critic_warmup_updates or not lcfg.zero_init_actor
            unfiltered = self._success(episodes_env, filtered=False)["success_rate"] if moved else out["success_rate"]
            out.update(success_rate_unfiltered=unfiltered)
        self._evaluated_at = self.progress
        return out

    def _success(self, episodes_env: Any, filtered: bool) -> dict[str, float]:
        env = episodes_env or self.eval_env
        base = BasePolicy(self.bc, self.bc_cfg.ensemble_m, env.num_envs)
        kept: list[float] = []
        size: list[float] = []

        def act(obs: dict[str, np.ndarray]) -> np.ndarray:
            b = base.step(obs["policy"])
            a = self.learner.act(self._with_base(obs, b), deterministic=True, filtered=filtered).numpy()
            kept.append(self.learner.last_filter_keep)
            size.append(float(np.abs(a - b).mean()))
            return a

        act.reads_groups = True  # type: ignore[attr-defined]
        ep = success_episodes(act, env, seed=self.cfg.seed + 10_000, reset=base.reset)
        out = {"success_rate": float(ep["success"].mean()), "mean_length": float(ep["length"].mean())}
        if filtered and not self.cfg.finetune:
            # How far the applied action is from the base's, mean over steps and dimensions (env action units):
            # a collapse shows here before it shows in success.
            out["residual_size_eval"] = float(np.mean(size))
        if filtered and self.learner.cfg.q_filter is not None:
            out["filter_keep_eval"] = float(np.mean(kept))
        return out

    # ---- one iteration ------------------------------------------------------------------------------------

    def _start(self) -> None:
        cfg = self.cfg
        self.gen = torch.Generator().manual_seed(cfg.seed + self.progress)
        self.rng = np.random.default_rng(cfg.seed + self.progress)
        self.base = BasePolicy(self.bc, self.bc_cfg.ensemble_m, cfg.num_envs)
        self._obs = self.env.reset(seed=cfg.seed + self.progress)
        self._b, self._chunk = self.base.propose(self._obs["policy"])
        self._offset = self._draw_offsets(cfg.num_envs)

    def _draw_offsets(self, n: int) -> np.ndarray:
        """`warmup_offset`: one constant offset per env and episode (zeros when off)."""
        w = self.cfg.warmup_offset
        return self.rng.uniform(-w, w, size=(n, self.env.spec.action_dim)) if w > 0 else np.zeros((n, self.env.spec.action_dim))

    def iterate(self) -> dict[str, float]:
        """About 256 transitions (then the updates they owe); evaluates when `eval_every` steps have passed."""
        cfg = self.cfg
        if self._obs is None:
            self._start()
            if self.progress == 0:
                return self.evaluate()  # the curve starts at the base alone
        next_eval = (self.progress // cfg.eval_every + 1) * cfg.eval_every
        # Stop at an evaluation, a checkpoint or the budget, so each happens where it is due.
        stops = [next_eval, (self.progress // cfg.checkpoint_every + 1) * cfg.checkpoint_every, self.ctx.total or 2**62]
        for _ in range(max(1, 256 // cfg.num_envs)):
            self._collect_step()
            if self.progress >= min(stops):
                break
        out = dict(self._metrics)
        out["transitions"] = float(len(self.buffer))
        if self.progress >= next_eval:
            out.update(self.evaluate())
        return out

    def _collect_step(self) -> None:
        cfg, base, env = self.cfg, self.base, self.env
        if cfg.ramp_steps > 0 and not cfg.finetune:
            self._metrics["residual_gain"] = self.ramp()
        base.history.push(self._chunk)
        o = self._with_base(self._obs, self._b)
        action = self._explore(o)
        nxt, rew, term, trunc, info = env.step(action)
        done = np.logical_or(term, trunc)
        # The env keeps every env's observation before auto-reset in final_obs (the others' equal nxt).
        boot = info.get("final_obs", nxt)
        # The base's next action is needed twice (to bootstrap, and to act next step): compute it once.
        self._b, self._chunk = base.propose(boot["policy"])
        self.buffer.add(o, action, rew, self._with_base(boot, self._b), term, trunc)
        if done.any():
            ids = np.flatnonzero(done)
            if cfg.reset_base_history:
                base.reset(ids)
            if cfg.warmup_offset > 0 and self.progress < cfg.learning_starts:
                self._offset[ids] = self._draw_offsets(len(ids))
            self._b[ids], self._chunk[ids] = base.propose(nxt["policy"][ids], ids)
        self._obs = nxt
        self.progress += cfg.num_envs
        if len(self.buffer) >= cfg.learning_starts:
            self._owed += cfg.learner.utd_ratio * cfg.num_envs
            while self._owed >= 1.0:
                self._metrics = self.learner.update_from(self.buffer, self.demos, 1, self.gen)
                self._owed -= 1.0

    def _explore(self, o: dict[str, np.ndarray]) -> np.ndarray:
        """The collection action: warm-up noise around the base first, then the learner (ramped in, if set)."""
        cfg = self.cfg
        b = o[BASE_GROUP]
        if self.progress < cfg.learning_starts and cfg.warmup_noise is not None:
            noise = self.rng.uniform(-cfg.warmup_noise, cfg.warmup_noise, size=b.shape)
            offset = self._offset if cfg.warmup_offset > 0 else 0.0
            return np.clip(b + noise + offset, -1.0, 1.0).astype(np.float32)
        action = self.learner.act(o).numpy()
        if cfg.learner.q_filter is not None:
            self._metrics["filter_keep"] = self.learner.last_filter_keep
        if cfg.progressive_steps > 0 and not cfg.finetune:
            # Each env applies the residual with probability p (else the base alone); p ramps 0 -> 1.
            p = min(1.0, max(0.0, (self.progress - cfg.learning_starts) / cfg.progressive_steps))
            off = self.rng.random(len(b)) >= p
            action[off] = b[off]
        return action

    def final_stats(self) -> dict[str, float]:
        return self.evaluate() if self._evaluated_at != self.progress else {}

    # ---- persistence and export ---------------------------------------------------------------------------

    def sync(self) -> None:
        self.buffer.sync()

    def state_dict(self) -> dict[str, Any]:
        return {"learner": self.learner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])

    def on_resume(self) -> str:
        n = len(self.buffer)
        if self.progress == 0:
            # No checkpoint: the learner starts over from the config; the transitions on disk are all kept.
            self.progress = n
        return f"with {n:,} transitions already on disk"

    def export_graph(self) -> ChunkedPolicyGraph:
        """The deployable graph: base + scale * residual (or the fine-tuned network alone).

        With the Q-filter, the graph carries it (critics included) when the critics read nothing the robot
        lacks (the default: `learner.critic_obs` without `privileged`); with privileged critics the filter
        is a training-time (simulation) safeguard and the graph is base + scale * residual unfiltered.
        """
        if self.cfg.finetune:
            return ChunkedPolicyGraph(first_action_bc(self.learner.actor.bc), 0.0)
        scale = self.effective_scale()
        residual = (FilteredResidual(self.learner, scale) if exportable_filter(self.learner.cfg)
                    else ExportedActor(self.learner))
        return ChunkedPolicyGraph(self.bc, self.bc_cfg.ensemble_m, residual, scale)

    def export(self) -> dict[str, float]:
        """policy.onnx + policy.json (with parity check) into the run folder."""
        from s2r.sim.env import sample_obs

        parity = sample_obs(self.eval_env, 2, seed=self.cfg.seed)["policy"][:256]
        in_graph = not self.cfg.finetune and exportable_filter(self.learner.cfg)
        # The bound the graph applies: below `scale` when the run ended inside its ramp (`ramp_steps`).
        g = 1.0 if self.cfg.finetune else self.ramp()
        residual = ResidualSection(scale=self.cfg.scale * g, base=str(self.base_dir), finetune=self.cfg.finetune,
                                   q_filter=self.learner.cfg.q_filter if in_graph else None,
                                   dim_scale=tuple(v * g for v in self.cfg.dim_scale) or None)
        return export_chunked(self.export_graph(), self.env.spec, self.task_id, self.run_dir, parity,
                              algo="finetune" if self.cfg.finetune else "residual",
                              residual=residual, tol=PARITY_TOL)

    def close(self) -> None:
        self.buffer.close()
        self.env.close()
        self.eval_env.close()


@register_algorithm
class FineTune(ResidualRL):
    """The paper's baseline: the same learner trains the BC network itself (its first action, no residual)."""

    algo_id = "finetune"
    description = "full off-policy fine-tuning of a behaviour-cloning network (the residual RL baseline; --base)"
    finetune = True
