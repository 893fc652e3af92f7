"""The robot side of a human-in-the-loop run: act with the newest weights, mix in the operator, ship transitions.

`HilActor` is what a control loop (the `s2r hil actor` command, or a ROS node) calls once per step:

    executed = actor.act(obs, operator_input)      # policy proposal, operator takeover, hold on device loss
    ...send `executed` to the robot, read the next observation and the reward/labels...
    actor.record(next_obs, reward, terminated, truncated)

New weights arrive on the link as ONNX bytes; an onnxruntime session for them is built on a background thread
and swapped in between two steps, so a weights update never stalls the loop. Until the first weights arrive
the policy proposes "hold" (zero motion, gripper open) and only the operator moves the arm; when the learner
goes away the last good policy keeps running and transitions keep spooling to disk (`s2r.real.hil_link`).
No torch, no simulator: numpy + onnxruntime (+ grpcio for the link).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from s2r.real.intervention import InterventionMixer, MixedStep, OperatorInput


class OnnxWeights:
    """The newest policy received: `offer` weights, `__call__` (1, obs_dim) -> (1, action_dim) or None."""

    def __init__(self) -> None:
        self.version: int | None = None
        self._session: Any = None
        self._input = ""
        self._building: threading.Thread | None = None
        self._ready: tuple[int, Any, str] | None = None
        self.errors = 0
        self.last_error = ""

    def offer(self, version: int, onnx_bytes: bytes) -> None:
        """Start building a session for `version` unless it is not newer or one is already being built."""
        if (self.version is not None and version <= self.version) or (self._building and self._building.is_alive()):
            return

        def build() -> None:
            import onnxruntime as ort

            try:
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = 1  # the control loop's core stays free
                sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
                self._ready = (version, sess, sess.get_inputs()[0].name)
            except Exception as exc:  # a corrupt model keeps the last good one running
                self.errors += 1
                self.last_error = f"weights version {version} do not load in onnxruntime: {exc}"

        self._building = threading.Thread(target=build, name="hil-weights-load", daemon=True)
        self._building.start()

    def __call__(self, obs: np.ndarray) -> np.ndarray | None:
        if self._ready is not None:  # swap between steps, never during one
            self.version, self._session, self._input = self._ready
            self._ready = None
        if self._session is None:
            return None
        return self._session.run(None, {self._input: obs.astype(np.float32, copy=False)})[0]


class HilActor:
    """Per-step glue between a policy, an operator, the mixer and the link (one robot, num_envs = 1).

    Args:
        link: an `s2r.real.hil_link.HilActorLink` (anything with `send(dict) -> int` and `latest_weights()`).
        action_dim: The policy's action size (end-effector delta + gripper for the arm).
        hold_action: What the arm does before any weights arrive (default zeros with the gripper open).
        fallback: (1, obs_dim) -> (1, action_dim) proposals until the first weights arrive (e.g. the exported
            policy the robot started with); without one the arm holds and only the operator moves it.
    """

    def __init__(self, link: Any, action_dim: int, hold_action: np.ndarray | None = None,
                 fallback: Any = None) -> None:
        self.fallback = fallback
        self.link = link
        self.weights = OnnxWeights()
        self.mixer = InterventionMixer(1, action_dim)
        if hold_action is None:
            hold_action = np.zeros(action_dim, np.float32)
            hold_action[-1] = -1.0
        self.hold_action = np.asarray(hold_action, np.float32).reshape(1, action_dim)
        self._obs: np.ndarray | None = None
        self._mix: MixedStep | None = None
        self.steps = 0
        self.episode_steps = 0

    def propose(self, obs: np.ndarray) -> np.ndarray:
        """(1, action_dim) the policy's proposal for `obs` ((obs_dim,)): newest weights, else the fallback or hold.

        A simulated operator judges this proposal before `act`; pass it back to `act` so the policy runs once.
        """
        w = self.link.latest_weights()
        if w is not None:
            self.weights.offer(w[0], w[1])
        o = np.asarray(obs, np.float32).reshape(1, -1)
        proposed = self.weights(o)
        if proposed is None:
            proposed = self.fallback(o) if self.fallback is not None else self.hold_action
        return np.clip(proposed, -1.0, 1.0)

    def act(self, obs: np.ndarray, op: OperatorInput, proposed: np.ndarray | None = None) -> np.ndarray:
        """The (action_dim,) action to execute for `obs` (the policy group, (obs_dim,)).

        `proposed`: this step's `propose(obs)` when the caller already has it.
        """
        self._obs = np.asarray(obs, np.float32).reshape(1, -1)
        if proposed is None:
            proposed = self.propose(obs)
        self._mix = self.mixer.step(proposed, op)
        return self._mix.executed[0]

    def record(self, next_obs: np.ndarray, reward: float, terminated: bool, truncated: bool) -> int | None:
        """Send the step just taken; returns its sequence number (None for a held step, which teaches nothing)."""
        mix, obs = self._mix, self._obs
        if mix is None or obs is None:
            raise RuntimeError("HilActor.record called before act")
        self._mix = None
        self.steps += 1
        self.episode_steps += 1
        if terminated or truncated:
            self.mixer.reset()
            self.episode_steps = 0
        if mix.held[0]:
            return None
        return self.link.send({
            "obs": obs[0], "next_obs": np.asarray(next_obs, np.float32).reshape(-1), "action": mix.executed[0],
            "proposed": mix.policy[0], "intervened": bool(mix.intervened[0]), "reward": float(reward),
            "terminated": bool(terminated), "truncated": bool(truncated),
            "policy_version": -1 if self.weights.version is None else int(self.weights.version),
        })
