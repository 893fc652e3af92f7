"""Intervention mixing: who acts this step, the policy or the operator, and what each transition records.

Per env (one on a robot, many in a simulated run), every control step:

- the operator is in control (`intervene` and the device connected): the executed action is theirs;
- otherwise the policy's action is executed;
- the device drops while the operator is in control: the takeover ends and the arm **holds** (zero
  end-effector motion, gripper as last commanded) until the device is back and the operator either takes
  over again or resets. Held steps are flagged and not given to the learner: neither the policy nor the
  operator chose them.

Each step reports the policy action and the executed action side by side plus `intervened` and `started`
(first step of a takeover), which is all HIL-SERL (intervened steps go to both buffers) and RLIF (the
takeover itself is the negative reward) need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from s2r.real.teleop import TeleopCommand


@dataclass(frozen=True)
class OperatorInput:
    """The operator's side of one step for `num_envs` envs (a device gives num_envs = 1)."""

    action: np.ndarray  # (n, A) in [-1, 1]
    intervene: np.ndarray  # (n,) bool
    connected: np.ndarray  # (n,) bool
    success: np.ndarray  # (n,) bool
    failure: np.ndarray  # (n,) bool
    reset: np.ndarray  # (n,) bool

    @classmethod
    def from_command(cls, cmd: TeleopCommand) -> OperatorInput:
        one = lambda v: np.array([bool(v)])  # noqa: E731
        return cls(np.asarray(cmd.action, dtype=np.float32)[None], one(cmd.intervene), one(cmd.connected),
                   one(cmd.success), one(cmd.failure), one(cmd.reset))

    @classmethod
    def idle(cls, num_envs: int, action_dim: int) -> OperatorInput:
        """Nobody at the controls (the RLPD baseline)."""
        z = np.zeros(num_envs, dtype=bool)
        return cls(np.zeros((num_envs, action_dim), np.float32), z, ~z, z, z, z)


@dataclass(frozen=True)
class MixedStep:
    """The outcome of mixing one step (all arrays have num_envs rows)."""

    executed: np.ndarray  # (n, A) the action sent to the robot
    policy: np.ndarray  # (n, A) what the policy proposed
    intervened: np.ndarray  # (n,) bool: the operator chose `executed`
    started: np.ndarray  # (n,) bool: first step of a takeover (RLIF's negative label goes here)
    held: np.ndarray  # (n,) bool: the arm was held after the device dropped; not a learning transition


class InterventionMixer:
    """Tracks takeovers and holds per env; `gripper_index` keeps the gripper as it was while holding."""

    def __init__(self, num_envs: int, action_dim: int, gripper_index: int | None = -1) -> None:
        self.num_envs = num_envs
        self.action_dim = action_dim
        self.gripper_index = gripper_index
        self.active = np.zeros(num_envs, dtype=bool)  # operator in control last step
        self.holding = np.zeros(num_envs, dtype=bool)
        self.last_executed = np.zeros((num_envs, action_dim), dtype=np.float32)
        self.takeovers = 0
        self.device_losses = 0

    def reset(self, env_ids: np.ndarray | None = None) -> None:
        """A new episode for `env_ids` (default all): a reset also releases a hold."""
        ids = slice(None) if env_ids is None else env_ids
        self.active[ids] = False
        self.holding[ids] = False

    def step(self, policy_action: np.ndarray, op: OperatorInput) -> MixedStep:
        pa = np.asarray(policy_action, dtype=np.float32).reshape(self.num_envs, self.action_dim)
        lost = self.active & ~op.connected
        self.device_losses += int(lost.sum())
        self.holding |= lost
        # A hold ends only when the device is back and the operator takes over again (or on reset).
        self.holding &= ~(op.connected & op.intervene)
        control = op.intervene & op.connected & ~self.holding
        started = control & ~self.active
        self.takeovers += int(started.sum())
        executed = np.where(control[:, None], np.clip(op.action, -1.0, 1.0), pa).astype(np.float32)
        if self.holding.any():
            hold = np.zeros_like(executed[self.holding])
            if self.gripper_index is not None:
                hold[:, self.gripper_index] = self.last_executed[self.holding, self.gripper_index]
            executed[self.holding] = hold
        self.active = control
        self.last_executed = executed
        return MixedStep(executed=executed, policy=pa, intervened=control.copy(), started=started,
                         held=self.holding.copy())
