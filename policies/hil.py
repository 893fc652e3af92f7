"""Human-in-the-loop RL (after HIL-SERL, with RLIF's intervention reward as an option), algorithm `hil`.

RLPD on the shared off-policy core: a SAC actor with LayerNorm critics, every batch half from the online
buffer and half from the "demo" buffer, which starts with the demonstrations and grows with every step the
operator drove (interventions go to **both** buffers, as HIL-SERL). Each step the policy proposes, the
operator may take over (`s2r.real.intervention.InterventionMixer`), and the transition keeps the executed
action (what the critic learns about) with the flag.

In simulation the operator is `s2r.sim.operator.SimulatedOperator` (the task's scripted expert taking over
when the policy strays), so the whole loop is testable and benchmarkable here:

    s2r train Panda-Lift-Cube --algo hil --steps 20000
    s2r train Panda-Lift-Cube --algo hil --train-set operator=false      # RLPD with the same demos
    s2r train Panda-Lift-Cube --algo hil --train-set rlif=true           # reward = -1 at each takeover

Rewards: the task's sparse success (the simulator, as the operator's success button on a robot), or with
`rlif=true` only the takeovers: the policy step right before the operator takes over gets -1 (RLIF), or with
`classifier=<onnx>` a learned success classifier alone (`s2r.policies.hil_reward`: its success rewards and
ends the episode, the simulator's success only counts its false positives).

From pixels: name the task's image groups in `learner.encoder.image_groups` (and turn its camera on), as for
sac: demos are recorded with the frames, both buffers keep them as uint8, the encoder learns through the
critic loss, the behaviour-cloning step and evaluation read them, and the export takes the camera input:

    s2r train Panda-PickPlace-Cube --algo hil --set image=true --set image_size=64 \
        --train-set learner.encoder.image_groups=image
The run folder holds `replay/` (online) and `interventions/` (demos + operator steps), both written as they
arrive, so a killed run resumes with every transition.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from s2r.policies.algorithm import Algorithm, AlgorithmTaskMismatch, RunContext, register_algorithm
from s2r.policies.encoders import augment
from s2r.policies.evaluate import success_episodes
from s2r.policies.offpolicy import ExportedActor, OffPolicyConfig, OffPolicyLearner
from s2r.policies.replay import ReplayBuffer
from s2r.real.intervention import InterventionMixer, OperatorInput
from s2r.sim.operator import SimulatedOperatorConfig


@dataclass(frozen=True, kw_only=True)
class HilConfig:
    """HIL run settings (the budget is the driver's `--steps`, in env steps).

    Attributes:
        num_envs: Envs stepped together (a robot is one; simulation may run several operators at once).
        seed: Seed for envs, torch, the operator and sampling.
        torch_threads: torch intra-op threads (0: leave the default).
        demos: Episode folder (`s2r demos collect`) to start the demo buffer; empty: collect `num_demos`
            with the task's scripted expert into the run folder.
        num_demos: Demonstrations collected when `demos` is empty (HIL-SERL uses 20).
        demo_noise: Action noise of those demonstrations.
        operator: Let the simulated operator take over (False: RLPD with the same demos, no interventions).
        operator_cfg: How the simulated operator behaves.
        interventions_to_demos: Add operator-driven steps to the demo buffer too (HIL-SERL); False keeps
            them in the online buffer only.
        rlif: Reward -1 on the policy step before each takeover and nothing else (RLIF), instead of success.
        bc_weight: Weight of a behaviour-cloning step on demo/operator actions after each update (0: plain
            HIL-SERL). With our few thousand steps it is what makes the difference (bench/results/README.md).
        rl: Learn with RL; False leaves only the behaviour-cloning step on demos + operator steps, i.e.
            HG-DAgger (the policy acts, the operator corrects, BC on every correction), the issue's baseline.
        learning_starts: Online transitions before the first update.
        buffer_capacity: Online transitions kept.
        steps_per_iteration: Lockstep env steps per logged row.
        window: Env steps over which the intervention rate is measured (and finished episodes averaged).
        eval_every: Env steps between evaluations of the deterministic policy without an operator.
        eval_episodes: Episodes per evaluation (one per eval env).
        link: Serve actors elsewhere over gRPC on this "host:port" instead of stepping envs here
            (`s2r hil learner`); a non-loopback address needs the token in the environment variable `token_env`.
        token_env: Environment variable holding the link's shared token.
        publish_every_s: Seconds between weight pushes to the actors (remote mode).
        classifier: ONNX reward classifier (`s2r hil classifier`) that is the only reward: its success
            rewards and ends the episode; the simulator's success is only counted (`s2r.policies.hil_reward`).
        learner: The off-policy learner (HIL-SERL: 2 LayerNorm critics, batch 256, gamma 0.97, actor every
            second critic update).
    """

    num_envs: int = 4
    seed: int = 0
    torch_threads: int = 0
    demos: str = ""
    num_demos: int = 20
    demo_noise: float = 0.1
    operator: bool = True
    operator_cfg: SimulatedOperatorConfig = field(default_factory=SimulatedOperatorConfig)
    interventions_to_demos: bool = True
    rlif: bool = False
    bc_weight: float = 1.0
    rl: bool = True
    learning_starts: int = 500
    buffer_capacity: int = 1_000_000
    steps_per_iteration: int = 50
    window: int = 2_000
    eval_every: int = 5_000
    eval_episodes: int = 50
    link: str = ""
    token_env: str = "S2R_HIL_TOKEN"
    publish_every_s: float = 2.0
    classifier: str = ""
    learner: OffPolicyConfig = field(default_factory=lambda: OffPolicyConfig(
        actor="stochastic", num_critics=2, critic_subset=2, batch_size=256, utd_ratio=1.0, gamma=0.97, tau=0.005,
        actor_lr=3e-4, critic_lr=3e-4, alpha_lr=3e-4, init_alpha=0.1, policy_delay=2, n_step=1))

    def __post_init__(self) -> None:
        if not self.rl and self.bc_weight <= 0:
            raise ValueError("hil with rl=false learns only from its behaviour-cloning step: set bc_weight > 0")
        if self.learner.n_step != 1:
            # Operator steps reach the demo buffer one env at a time, interleaved: n-step sums would run
            # across envs there.
            raise ValueError("hil needs learner.n_step=1 (interventions are stored one step at a time)")
        if self.classifier and self.rlif:
            raise ValueError("hil takes one reward: classifier= (a learned success) or rlif=true (takeovers), not both")
        if self.link and (self.classifier or self.learner.encoder.image_groups):
            # The link carries the policy vector and the actor's reward; images and the classifier stay on the actor.
            raise ValueError("hil with link= learns from the policy vector the actors send: drop learner.encoder."
                             "image_groups, and give the classifier to `s2r hil actor --classifier` instead of classifier=")


PROPOSED, INTERVENED = "proposed_action", "intervened"


def _as_operator_steps(ep: Any) -> Any:
    """A demonstration as operator-driven steps: proposed = executed = the demonstrator's action, flag set."""
    from dataclasses import replace

    acts = np.concatenate([ep.actions, ep.actions[-1:]]).astype(np.float32)  # (T+1, A): obs rows are T+1
    return replace(ep, obs={**ep.obs, PROPOSED: acts, INTERVENED: np.ones((len(acts), 1), np.float32)})


@register_algorithm
class HilRL(Algorithm):
    """Collect with the policy and an operator who may take over; learn RLPD-style from both buffers."""

    algo_id = "hil"
    config_cls = HilConfig
    default_steps = 50_000
    checkpoint_every = 10_000
    durable_replay = True
    unit: ClassVar[str] = "env steps"
    curve = (("success_rate", "success rate (policy alone)"), ("intervention_rate", "intervention rate (training)"))
    postfix = (("success_rate", "success"), ("intervention_rate", "interv"))
    description = "human-in-the-loop RL (HIL-SERL: RLPD + operator takeovers; simulated operator in sim)"

    def __init__(self, ctx: RunContext) -> None:
        from s2r.sim import make
        from s2r.sim.operator import SimulatedOperator
        from s2r.sim.tasks.experts import expert_task_ids

        self.ctx = ctx
        self.cfg = cfg = ctx.cfg
        self.task_id = ctx.task_id
        if cfg.link:
            from s2r.policies.hil_remote import link_token

            link_token(cfg)  # refuse an exposed address without a token before building anything
        if ctx.task_id not in expert_task_ids():
            raise AlgorithmTaskMismatch(f"task '{ctx.task_id}' has no scripted expert for the simulated operator and "
                                        f"demos; hil runs in simulation on: {', '.join(expert_task_ids())}")
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        self.reward_fn = None
        train_cfg = ctx.task_cfg
        if cfg.classifier:
            from s2r.policies.hil_reward import ClassifierReward, classifier_task_config

            train_cfg = classifier_task_config(ctx.task_cfg, ctx.task_id)
            self.reward_fn = ClassifierReward(cfg.classifier, ctx.task_id, ctx.task_cfg, cfg.num_envs)
        self.env = make(ctx.task_id, cfg.num_envs, cfg=train_cfg, seed=cfg.seed)
        self.eval_env = None
        self.buffer = self.demo_buffer = None
        try:
            from s2r.policies.sac import check_spec

            spec = self.env.spec
            check_spec(ctx.task_id, spec, cfg, self.algo_id)  # image groups the task has, actor on `policy`
            self.images = tuple(cfg.learner.encoder.image_groups)
            self.groups = ("policy", *self.images)
            self.dims = {"policy": self.env.obs_dims["policy"], **{g: self.env.obs_shapes[g] for g in self.images}}
            self.dtypes = {g: self.env.obs_dtypes[g] for g in self.groups}
            a_dim = spec.action_dim
            run = ctx.run
            # Every transition keeps what the policy proposed and whether the operator drove, beside the
            # executed action the critic learns from; the learner reads `policy` and the image groups.
            self.record_dims = {**self.dims, PROPOSED: a_dim, INTERVENED: 1}
            # Remote mode: the link's inbox is the durable record; buffers are rebuilt from it at start.
            remote = bool(cfg.link)
            self.demo_buffer = ReplayBuffer(self.record_dims, a_dim, cfg.buffer_capacity, num_envs=1,
                                            directory=None if remote else run.path / "interventions",
                                            obs_dtypes=self.dtypes)
            if len(self.demo_buffer) == 0:
                for ep in self._load_demos():
                    self.demo_buffer.add_episode(_as_operator_steps(ep))
            x = self.demo_buffer._obs["policy"][: len(self.demo_buffer)]
            # Input statistics fixed from the demos (online statistics drift as the policy improves).
            stats = {"policy": (x.mean(0), x.std(0) + 1e-3)}
            self.learner = OffPolicyLearner(self.dims, a_dim, cfg.learner, obs_stats=stats, obs_dtypes=self.dtypes)
            self.buffer = ReplayBuffer(self.record_dims, a_dim, cfg.buffer_capacity, num_envs=1 if remote else cfg.num_envs,
                                       directory=None if remote else run.replay, obs_dtypes=self.dtypes)
            self.mixer = InterventionMixer(cfg.num_envs, a_dim)
            self.operator = (SimulatedOperator(ctx.task_id, cfg.num_envs, cfg.operator_cfg, seed=cfg.seed,
                                               task_cfg=train_cfg) if cfg.operator and not remote else None)
            self.source = None
            if remote:
                from s2r.policies.hil_remote import RemoteSource

                self.source = RemoteSource(self)
        except BaseException:
            self.close()
            raise
        self.progress = 0
        self._obs: dict[str, np.ndarray] | None = None
        self._owed = 0.0
        self._metrics: dict[str, float] = {}
        self._intervened: deque[float] = deque(maxlen=max(1, cfg.window // cfg.num_envs))
        self._episodes: deque[float] = deque(maxlen=50)
        self._takeovers_total = 0
        self._pending: dict[str, Any] | None = None  # RLIF: a step is stored once the next shows a takeover
        self._evaluated_at = -1

    def _load_demos(self) -> list:
        from s2r.policies.demos import collect_demos
        from s2r.real.episodes import read_episodes

        cfg, spec = self.cfg, self.env.spec
        folder = cfg.demos
        if not folder:
            folder = str(self.ctx.run.path / "demos")
        if not cfg.demos and not any(Path(folder).glob("episode_*.npz")):  # collected once per run, kept on resume
            # The run's own task config (camera on, sizes): demos carry every group the learner reads.
            collect_demos(self.task_id, folder, cfg.num_demos, noise=cfg.demo_noise, num_envs=min(8, cfg.num_demos),
                          seed=cfg.seed + 50_000, progress=False, task_cfg=self.ctx.task_cfg)
        _, eps = read_episodes(folder, task=self.task_id, obs_dims=dict(self.env.obs_dims), action_dim=spec.action_dim,
                               obs_shapes={g: self.dims[g] for g in self.images},
                               obs_dtypes={g: self.dtypes[g] for g in self.images})
        if not eps:
            raise AlgorithmTaskMismatch(f"demo folder {folder} holds no episodes; record some with `s2r demos collect`")
        if self.reward_fn is not None:  # the classifier labels the demos too: no simulator reward anywhere
            eps = [self.reward_fn.relabel(ep) for ep in eps]
        return eps

    # ---- acting and learning ------------------------------------------------------------------------------

    def _start(self) -> None:
        cfg = self.cfg
        if self.source is not None:
            # Every transition the actors ever sent is back in the buffers: that is the progress made.
            self.progress = self.source.start()
        start = cfg.seed + self.progress
        self.gen = torch.Generator().manual_seed(start)
        self._obs = self.env.reset(seed=start)
        if self.operator is not None:
            self.operator.reset()
        self.mixer.reset()

    def iterate(self) -> dict[str, float]:
        cfg = self.cfg
        if self._obs is None:
            self._start()
            if self.progress == 0:
                return self.evaluate()  # the curve starts at the untrained policy
        next_eval = (self.progress // cfg.eval_every + 1) * cfg.eval_every
        if self.source is not None:
            self._receive()
        else:
            for _ in range(cfg.steps_per_iteration):
                self._collect_step()
                if self.progress >= min(next_eval, self.ctx.total or 2**62):
                    break
        out = {**self._metrics, "transitions": float(len(self.buffer)), "demo_buffer": float(len(self.demo_buffer)),
               "intervention_rate": float(np.mean(self._intervened)) if self._intervened else 0.0,
               "takeovers": float(self._takeovers_total)}
        if self.reward_fn is not None:
            out.update(self.reward_fn.metrics())
        if self._episodes:
            out["train_success"] = float(np.mean(self._episodes))
        if self.progress >= next_eval:
            out.update(self.evaluate())
        return out

    def _collect_step(self) -> None:
        cfg, env = self.cfg, self.env
        obs = {g: self._obs[g] for g in self.groups}
        proposed = self.learner.act(obs).numpy()
        # The operator judges what the policy means to do (its mean action), not one noisy sample of it.
        intent = self.learner.act(obs, deterministic=True).numpy() if self.operator is not None else None
        op = (self.operator(self._obs, intent) if self.operator is not None
              else OperatorInput.idle(cfg.num_envs, env.spec.action_dim))
        mix = self.mixer.step(proposed, op)
        nxt, rew, term, trunc, info = env.step(mix.executed)
        final = info.get("final_obs", nxt)
        ended_by_classifier = None
        if self.reward_fn is not None:
            rew, term, trunc, ended_by_classifier, at_end = self.reward_fn.judge(final, info["success"], term, trunc)
        flags = {PROPOSED: proposed, INTERVENED: mix.intervened[:, None].astype(np.float32)}
        obs = {**obs, **flags}
        boot = {**{g: np.array(final[g]) for g in self.groups}, **flags}  # copies: `nxt` may be restarted below
        done = np.logical_or(term, trunc)
        step = {"obs": obs, "action": mix.executed, "reward": np.asarray(rew, np.float32), "next": boot,
                "term": np.asarray(term), "trunc": np.asarray(trunc), "intervened": mix.intervened}
        if cfg.rlif:
            step["reward"] = np.zeros(cfg.num_envs, np.float32)
            self._store_rlif(step, mix.started)
        else:
            self._store(step)
        self._intervened.append(float(mix.intervened.mean()))
        self._takeovers_total += int(mix.started.sum())
        if ended_by_classifier is not None:
            # Training success is the simulator's, at each episode's last frame, whoever ended it.
            self._episodes.extend(at_end[done].astype(float).tolist())
            if len(ended_by_classifier):
                fresh = env.end_episodes(ended_by_classifier)  # the classifier ended them, the simulator did not
                for g in nxt:
                    nxt[g][ended_by_classifier] = fresh[g]
        elif "episode" in info:
            self._episodes.extend(np.asarray(info["episode"]["success"], dtype=float).tolist())
        self._progress_and_learn(cfg.num_envs)
        if done.any():
            ids = np.flatnonzero(done)
            if self.operator is not None:
                self.operator.reset(ids)
            self.mixer.reset(ids)
        self._obs = nxt

    def _progress_and_learn(self, new: int) -> None:
        """Count `new` env steps and do the updates they owe once enough data is in."""
        self.progress += new
        if len(self.buffer) >= self.cfg.learning_starts:
            self._owed += self.cfg.learner.utd_ratio * new
            while self._owed >= 1.0:
                if self.cfg.rl:
                    self._metrics = self.learner.update_from(self.buffer, self.demo_buffer, 1, self.gen)
                if self.cfg.bc_weight > 0:
                    self._metrics["bc_loss"] = self._bc_step()
                self._owed -= 1.0

    def _bc_step(self) -> float:
        """One step of the actor's mean action towards demo/operator actions (a batch from the demo buffer)."""
        learner = self.learner
        batch = self.demo_buffer.sample(learner.cfg.batch_size // 2, generator=self.gen)
        if self.images and learner.cfg.encoder.pad:  # the frames the actor learns from are shifted, as the critic's
            batch = augment(batch, self.images, learner.cfg.encoder.pad)
        mean, _ = learner.policy({g: batch.obs[g] for g in self.groups}, sample=False)
        loss = self.cfg.bc_weight * (mean - batch.action).square().mean()
        learner.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        learner.actor_optimizer.step()
        return float(loss.detach())

    def _receive(self) -> None:
        """Remote mode: store what the actors sent, learn from it, push weights when due."""
        cfg = self.cfg
        got = self.source.receive(max_wait_s=1.0, want=cfg.steps_per_iteration)
        self._progress_and_learn(got)
        self.source.publish()

    def note_transition(self, intervened: bool, t: dict[str, Any]) -> None:
        """Statistics of one remote transition (the local loop keeps its own)."""
        self._intervened.append(float(intervened))
        if t.get("terminated") or t.get("truncated"):
            self._episodes.append(float(bool(t.get("terminated")) and float(t.get("reward", 0.0)) > 0))

    def _store(self, s: dict[str, Any]) -> None:
        self.buffer.add(s["obs"], s["action"], s["reward"], s["next"], s["term"], s["trunc"])
        if self.cfg.interventions_to_demos:
            for i in np.flatnonzero(s["intervened"]):
                row = slice(i, i + 1)
                self.demo_buffer.add({g: v[row] for g, v in s["obs"].items()}, s["action"][row], s["reward"][row],
                                     {g: v[row] for g, v in s["next"].items()}, s["term"][row], s["trunc"][row])

    def _store_rlif(self, step: dict[str, Any], started: np.ndarray) -> None:
        """Hold each step back one step: a takeover on the next step labels it -1 (same episode only)."""
        prev = self._pending
        if prev is not None:
            same_episode = ~(prev["term"] | prev["trunc"])
            prev["reward"] = np.where(started & same_episode, -1.0, prev["reward"]).astype(np.float32)
            self._store(prev)
        self._pending = step

    def evaluate(self) -> dict[str, float]:
        """Success rate of the deterministic policy alone (no operator), one episode per eval env."""
        from s2r.sim import make

        if self.eval_env is None:
            self.eval_env = make(self.task_id, self.cfg.eval_episodes, cfg=self.ctx.task_cfg, seed=self.cfg.seed + 10_000)

        def act(obs: dict[str, np.ndarray]) -> np.ndarray:
            return self.learner.act({g: obs[g] for g in self.groups}, deterministic=True).numpy()

        act.reads_groups = True  # success_episodes passes the whole observation dict (cameras too)
        ep = success_episodes(act, self.eval_env, seed=self.cfg.seed + 10_000)
        self._evaluated_at = self.progress
        return {"success_rate": float(ep["success"].mean()), "mean_length": float(ep["length"].mean())}

    def final_stats(self) -> dict[str, float]:
        return self.evaluate() if self._evaluated_at != self.progress else {}

    # ---- persistence and export ---------------------------------------------------------------------------

    def sync(self) -> None:
        self.buffer.sync()
        self.demo_buffer.sync()

    def state_dict(self) -> dict[str, Any]:
        return {"learner": self.learner.state_dict(), "takeovers": self._takeovers_total,
                **({"classifier_counts": dict(self.reward_fn.counts)} if self.reward_fn is not None else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])
        self._takeovers_total = int(state.get("takeovers", 0))
        if self.reward_fn is not None:
            self.reward_fn.counts.update(state.get("classifier_counts", {}))

    def on_resume(self) -> str:
        n = len(self.buffer)
        if self.progress == 0:
            self.progress = n
        return f"with {n:,} online and {len(self.demo_buffer):,} demo/intervention transitions on disk"

    def export(self) -> dict[str, Any]:
        """policy.onnx (deterministic actor, normaliser and image encoder inside) + policy.json, parity-checked."""
        from s2r.policies.export import build_metadata, export_onnx_checked, image_inputs
        from s2r.sim import make
        from s2r.sim.env import sample_obs

        obs_dim, spec, images = self.dims["policy"], self.env.spec, self.images
        env = make(self.task_id, 4, cfg=self.ctx.task_cfg, seed=self.cfg.seed + 20_000)
        try:
            sampled = sample_obs(env, 16, seed=self.cfg.seed)
        finally:
            env.close()
        meta = build_metadata(spec, self.task_id, obs_dim, algo=self.algo_id, task_cfg=self.ctx.task_cfg,
                              images=image_inputs(spec, images))
        example = (torch.zeros(1, obs_dim), *(torch.zeros(1, *spec.groups[g].shape, dtype=torch.uint8) for g in images))
        feed = {"obs": sampled["policy"], **{g: sampled[g] for g in images}}
        return export_onnx_checked(ExportedActor(self.learner), example, ["obs", *images], ["actions"],
                                   self.ctx.run.path, feed, meta)

    def close(self) -> None:
        if getattr(self, "source", None) is not None:
            self.source.stop()
        for b in (self.buffer, self.demo_buffer):
            if b is not None:
                b.close()
        self.env.close()
        if self.eval_env is not None:
            self.eval_env.close()


__all__ = ["HilConfig", "HilRL"]
