"""A simulated operator for human-in-the-loop runs: the task's scripted expert, watching and taking over.

Every step it asks the expert what it would do and compares that with the policy's proposal. When they
disagree by more than `threshold` (mean absolute difference per action dimension) for `patience` steps in
a row, the operator "notices"; `reaction_delay` steps later it takes over and drives with the expert's
actions (plus `noise`, its suboptimality) for at least `takeover_steps`, handing back once the policy
would agree again or after `max_takeover_steps`. `max_takeovers` per episode caps its effort, so a
hopeless policy still has to learn on its own. Success is labelled by the simulator (`info["success"]`),
as the operator's success button would on a robot.

It returns `s2r.real.intervention.OperatorInput`, exactly what a teleop device gives the mixer, so the
same HIL loop runs with a person or with this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from s2r.real.intervention import OperatorInput


@dataclass(frozen=True, kw_only=True)
class SimulatedOperatorConfig:
    """How attentive, quick and good the simulated operator is.

    Attributes:
        threshold: Mean |policy - expert| per action dimension that counts as straying.
        patience: Consecutive straying steps before the operator notices.
        reaction_delay: Steps from noticing to taking over (a person's reaction time; 0.3 s at 20 Hz = 6).
        takeover_steps: Shortest takeover.
        max_takeover_steps: Longest takeover.
        max_takeovers: Takeovers per episode at most (0: the operator never intervenes).
        noise: Gaussian noise on the operator's actions (suboptimality).
    """

    threshold: float = 0.5
    patience: int = 3
    reaction_delay: int = 2
    takeover_steps: int = 8
    max_takeover_steps: int = 40
    max_takeovers: int = 3
    noise: float = 0.1

    def __post_init__(self) -> None:
        if self.threshold <= 0 or min(self.patience, self.takeover_steps) < 1 or self.reaction_delay < 0:
            raise ValueError("SimulatedOperatorConfig needs threshold > 0, patience >= 1, takeover_steps >= 1 and "
                             "reaction_delay >= 0")
        if self.max_takeover_steps < self.takeover_steps:
            raise ValueError("SimulatedOperatorConfig.max_takeover_steps must be >= takeover_steps")


class SimulatedOperator:
    """Per-env attention state around one batched scripted expert."""

    def __init__(self, task_id: str, num_envs: int, cfg: SimulatedOperatorConfig = SimulatedOperatorConfig(),
                 seed: int = 0, task_cfg: Any = None) -> None:
        from s2r.sim.tasks.experts import make_expert

        self.cfg = cfg
        self.num_envs = num_envs
        self.expert = make_expert(task_id, num_envs, noise=cfg.noise, seed=seed, cfg=task_cfg)
        self.stray = np.zeros(num_envs, dtype=np.int64)  # consecutive straying steps
        self.countdown = np.full(num_envs, -1, dtype=np.int64)  # steps until a noticed takeover starts
        self.in_control = np.zeros(num_envs, dtype=np.int64)  # steps of the current takeover (0: not in control)
        self.takeovers = np.zeros(num_envs, dtype=np.int64)  # this episode

    def reset(self, env_ids: np.ndarray | None = None) -> None:
        ids = np.arange(self.num_envs) if env_ids is None else np.asarray(env_ids, dtype=np.int64)
        self.expert.reset(ids)
        self.stray[ids] = 0
        self.countdown[ids] = -1
        self.in_control[ids] = 0
        self.takeovers[ids] = 0

    def __call__(self, obs: dict[str, np.ndarray], policy_action: np.ndarray) -> OperatorInput:
        """The operator's input for this step, given what the policy proposes."""
        cfg = self.cfg
        expert = self.expert.act(obs)  # called every step: the expert's phase machine follows the episode
        gap = np.abs(np.asarray(policy_action) - expert).mean(axis=1)
        straying = gap > cfg.threshold
        controlling = self.in_control > 0
        # Hand back once the minimum is served and the policy agrees again, or at the longest takeover.
        release = controlling & (((self.in_control >= cfg.takeover_steps) & ~straying)
                                 | (self.in_control >= cfg.max_takeover_steps))
        self.in_control[release] = 0
        controlling &= ~release
        self.in_control[controlling] += 1
        watching = ~controlling & (self.countdown < 0)
        self.stray = np.where(watching & straying, self.stray + 1, 0)
        notice = watching & (self.stray >= cfg.patience) & (self.takeovers < cfg.max_takeovers)
        self.countdown[notice] = cfg.reaction_delay
        self.stray[notice] = 0
        start = (self.countdown == 0) & ~controlling
        self.countdown[self.countdown >= 0] -= 1
        self.in_control[start] = 1
        self.takeovers += start
        intervene = self.in_control > 0
        z = np.zeros(self.num_envs, dtype=bool)
        return OperatorInput(action=expert.astype(np.float32), intervene=intervene, connected=~z, success=z, failure=z,
                             reset=z)
