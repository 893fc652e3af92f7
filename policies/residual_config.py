"""Residual RL run settings (`s2r.policies.residual`): the residual RL paper's safeguards as switchable defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from s2r.policies.offpolicy import OffPolicyConfig
from s2r.policies.residual_base import BASE_GROUP


@dataclass(frozen=True, kw_only=True)
class ResidualConfig:
    """Residual RL run settings (the budget is the run driver's `--steps`, in env steps).

    The defaults are the residual RL paper's safeguards against the first actor updates wrecking the base
    (issue 13); each one can be switched off for an ablation, and the comment beside it says how. `--algo
    finetune` runs the same learner on the BC network, so it gets the same safeguards (a fair baseline).

    Attributes:
        base: The behaviour-cloning run folder to start from (`--base`).
        scale: Largest residual per action dimension, in normalised action units (actions span [-1, 1], so
            0.1 is 5% of the range; the paper's default).
        dim_scale: One largest residual per action dimension, replacing `scale` when given (as many as the
            task's actions; `--set dim_scale=0.1,0.1,0.1,0.5`). Why: on the cube tasks the gripper command is a
            finger *position* target, and the lift base's drops hold the cube with a command near -0.2 where its
            successes hold +0.8 (bench/cube_failures.py): a residual of 0.1 or 0.2 cannot close that gap, a
            larger one on the arm's dimensions would move the hand 5-10 mm per step. Empty: `scale` everywhere.
        num_envs: Envs stepped together while collecting.
        learning_starts: Transitions collected before the first update (the env-step warm-up).
        warmup_noise: During those first transitions the env gets the base action plus uniform noise in
            [-warmup_noise, warmup_noise] (env action units), so the critics see the base's neighbourhood
            before they are asked about it. None: the learner's own exploration (before issue 13).
        warmup_offset: During the warm-up each env's base action also gets one offset per episode, uniform in
            [-warmup_offset, warmup_offset] per dimension, drawn again when the episode ends. Why: the actor's
            first updates learn a residual that is nearly the same from step to step, and per-step noise shows
            the critics only what one step's change does, never a consistent one over a whole episode (the kind
            of change that wrecked insertion at its first evaluation after the actor started). 0: off.
        progressive_steps: Policy Decorator's progressive exploration: after `learning_starts`, each env
            applies the residual (with exploration noise) with a probability that ramps 0 -> 1 over this many
            env steps; the others run the base alone. 0: off (every env applies it from the start).
        ramp_steps: The residual's bound ramps from 0 to `scale` (`dim_scale`) over this many env steps from the
            actor's first update, in collection, evaluation and the export alike (counted in learner updates, so a
            resumed run picks up where it was). Written to test whether insertion's early dip was the residual's
            size: it was not. With a 20k ramp (seeds 0 and 2) the dip got deeper (0.15 at 15k, against 0.34 and
            0.49 without), because the actor's raw output grew to make up for the smaller bound; what removed the
            dip was the longer critic warm-up below (bench/results/README.md, issue 13). 0: off.
        use_demos: Sample part of each batch (`learner.demo_fraction`, half) from the base's demos.
        relabel_demos: The demos' `base_action` is what the base itself proposes at each demo step (so
            the critic learns residual = demo action - base action). False: the demo's own action (its
            residual is zero).
        reset_base_history: Reset the base's chunk history at every episode boundary, in collection and while
            relabelling demos (a stale history ensembles the last episode's chunks into the first actions).
        min_obs_std: Lower bound on the per-dimension std of the fixed observation normaliser (0: the old
            `std + 1e-3`): a near-constant demo feature would otherwise be blown up by a tiny std.
        min_action_range: The base action (an actor and critic input) is normalised by its demo range to
            [-1, 1], the range bounded below by this. 0: the base action is fed raw (before issue 13).
        buffer_capacity: Online transitions kept.
        eval_every: Env steps between evaluations.
        eval_episodes: Episodes per evaluation (one per env, deterministic actor).
        checkpoint_every: Env steps between checkpoints (the driver also checkpoints every few minutes).
        finetune: Train the BC network itself instead of a residual (the baseline; `--algo finetune`).
        seed: Seed for envs, torch and sampling.
        torch_threads: torch intra-op threads (0: leave the default).
        learner: The off-policy learner (TD3-style deterministic actor, as the paper). Its `utd_ratio` is the
            gradient updates per collected transition: 0.5 with 8 envs is 4 critic updates per vectorised env
            step, and `policy_delay=4` one actor update per step (the paper's 4 + 1 per iteration). Actor lr
            1e-6 against critic 1e-4 (Adam steps every weight by ~lr whatever the gradient's size, so a noisy
            early critic moves a 1e-4 actor a long way); exploration std 0.05 and target smoothing std 0.05
            clipped at 0.3 (in residual units); gradient clip 1.0; critic-only warm-up 10k updates (the paper's
            figure; with 5k warm-up transitions and 0.5 updates per transition the actor starts at 25k env
            steps). Until issue 13's round 7 it was 2,500 (the paper's scaled to our 100k-step budget; the actor
            at 10k; `--set learner.critic_warmup_updates=2500` reproduces the earlier bench rows): on insertion 2
            of 3 seeds then dipped 11-25 points at the first evaluation after the actor started; 10k took the
            worst dip to 1 point on 3 seeds at the same final success, and lift (seed 0) reached 0.99 at 30k
            against 0.98 at 20k (bench/results/README.md).
            Pessimistic Q-filter on (`learner.q_filter=1.0`, `learner.q_filter_bc=1.0`; off:
            `q_filter=none`): the residual is applied only where the critics' paired lower bound favours it over
            the base, and the actor is pulled back to the base elsewhere. With it, insertion (seed 0, 30k
            steps) held 0.56 -> 0.59 where the same run without it fell to 0.15; lift was not slowed (issue 13
            in bench/results/README.md). The critics read only the robot's inputs (policy + base action), so
            the filter, critics included, goes into the exported graph and the robot runs what training
            evaluates; with privileged critics (`learner.critic_obs=policy,privileged,base_action`, the
            default before) on lift and insertion, seed 0, success was the same within noise, but the
            export could only be unfiltered. `--algo finetune` runs without it (its anchor is the base, which
            fine-tuning has none of).
    """

    base: str = ""
    scale: float = 0.1
    dim_scale: tuple[float, ...] = ()
    num_envs: int = 8
    learning_starts: int = 5_000
    warmup_noise: float | None = 0.2
    warmup_offset: float = 0.0
    progressive_steps: int = 0
    ramp_steps: int = 0
    use_demos: bool = True
    relabel_demos: bool = True
    reset_base_history: bool = True
    min_obs_std: float = 0.1
    min_action_range: float = 0.1
    buffer_capacity: int = 1_000_000
    eval_every: int = 10_000
    eval_episodes: int = 50
    checkpoint_every: int = 10_000
    finetune: bool = False
    seed: int = 0
    torch_threads: int = 0
    learner: OffPolicyConfig = field(default_factory=lambda: OffPolicyConfig(
        actor="deterministic", actor_obs=("policy", BASE_GROUP), critic_obs=("policy", BASE_GROUP),
        num_critics=10, critic_subset=2, n_step=3, gamma=0.99, utd_ratio=0.5, policy_delay=4, zero_init_actor=True,
        critic_warmup_updates=10_000, exploration_noise=0.05, target_noise=0.05, target_noise_clip=0.3,
        actor_lr=1e-6, critic_lr=1e-4, max_grad_norm=1.0, actor_q="mean", demo_fraction=0.5,
        q_filter=1.0, q_filter_bc=1.0))

    def __post_init__(self) -> None:
        if not 0.0 < self.scale <= 2.0:
            raise ValueError(f"ResidualConfig.scale must be in (0, 2] (normalised action units), got {self.scale}")
        if not all(0.0 < s <= 2.0 for s in self.dim_scale):
            raise ValueError(f"ResidualConfig.dim_scale must hold values in (0, 2] (normalised action units), "
                             f"got {self.dim_scale}")
        if self.warmup_noise is not None and not 0.0 <= self.warmup_noise <= 2.0:
            raise ValueError(f"ResidualConfig.warmup_noise must be None or in [0, 2], got {self.warmup_noise}")
        for name in ("learning_starts", "progressive_steps", "ramp_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"ResidualConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.warmup_offset > 0 and self.warmup_noise is None:
            raise ValueError("ResidualConfig.warmup_offset is added to the warm-up around the base, which "
                             "warmup_noise=None switches off: set warmup_noise (0 for offsets alone) or warmup_offset=0")
        for name in ("min_obs_std", "min_action_range", "warmup_offset"):
            if getattr(self, name) < 0.0:
                raise ValueError(f"ResidualConfig.{name} must be >= 0 (0 switches the bound off), got {getattr(self, name)}")

    def action_scale(self) -> float | tuple[float, ...]:
        """The residual's largest step: `dim_scale` when given, else `scale` on every dimension."""
        return self.dim_scale or self.scale
