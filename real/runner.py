"""The policy runner: an exported ONNX policy + its metadata, checked against the robot, producing targets.

The runner refuses a policy that does not fit the robot (action kind, joint names and order, observation
size, control period, gains) with a `PolicyMismatchError` that names the mismatch. Once running it builds the
observation, runs onnxruntime, and maps actions to joint targets (`offset + scale * action`), blending
in from the pose the robot was in when it started so the first command never jumps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from s2r.real.chunking import ChunkHistory
from s2r.real.metadata import JointPositionAction, MetadataError, PolicyMetadata, load_metadata
from s2r.real.observation import ImageInputs, ObservationBuilder, RobotState
from s2r.real.robot import RobotConfig


class PolicyMismatchError(MetadataError):
    """The policy does not fit the robot it is asked to run on."""


@dataclass(frozen=True, kw_only=True)
class RunnerConfig:
    """How the runner starts and feeds the policy.

    Attributes:
        ramp_s: Seconds over which targets blend from the starting pose to the policy's targets.
        action_clip: Actions are clipped to +-this before use, as the training env does
            (LocomotionConfig.action_clip), so the fed-back `last_action` matches training.
        threads: onnxruntime intra-op threads; 1 keeps latency steady on a busy robot computer.
        max_image_age_s: A camera frame older than this when the policy runs is refused (the camera stopped).
    """

    ramp_s: float = 1.0
    action_clip: float = 10.0
    threads: int = 1
    max_image_age_s: float = 0.5


def _last_dim(shape: list[object]) -> int | None:
    """The last dimension of an ONNX shape if it is a fixed number (symbolic names give None)."""
    dim = shape[-1] if shape else None
    return dim if isinstance(dim, int) else None


def check_observation_inputs(meta: PolicyMetadata, onnx_inputs: dict[str, list[object]], where: str, runner: str) -> None:
    """One float32 vector first, then only camera inputs, each in the graph with the shape policy.json gives.

    Raises:
        PolicyMismatchError: One sentence naming the input.
    """
    extra = meta.observation[1:]
    if meta.obs.is_image or any(not o.is_image for o in extra):
        raise PolicyMismatchError(f"{where} takes observation inputs {[o.name for o in meta.observation]} "
                                  f"({', '.join(o.dtype for o in meta.observation)}); the {runner} feeds one float32 "
                                  "vector first, then camera images")
    for o in extra:
        if o.name not in onnx_inputs:
            raise PolicyMismatchError(f"{where} has no graph input '{o.name}' for camera '{o.camera}' (inputs "
                                      f"{list(onnx_inputs)})")
        fixed = [d for d in onnx_inputs[o.name][1:]]
        if all(isinstance(d, int) for d in fixed) and tuple(fixed) != tuple(o.shape):
            raise PolicyMismatchError(f"camera input '{o.name}' of {where} takes {tuple(fixed)} images but policy.json "
                                      f"says {tuple(o.shape)}")


def check_robot_kind(meta: PolicyMetadata, robot: object, where: str) -> None:
    """Refuse an end-effector policy on a joint robot config, and a joint-space policy on an arm config.

    Raises:
        PolicyMismatchError: One sentence naming both files and which kind of config to give instead.
    """
    arm = getattr(robot, "kind", "joint") == "arm"
    src, name = getattr(robot, "source", "<robot config>"), getattr(robot, "name", "?")
    if meta.action.kind == "ee_delta" and not arm:
        raise PolicyMismatchError(f"{where} moves an end effector (action kind 'ee_delta') but {src} describes "
                                  f"'{name}', a joint-position robot without a kinematic chain; give an arm config "
                                  "(kind: arm) such as launch/robots/panda.yaml")
    if meta.action.kind != "ee_delta" and arm:
        raise PolicyMismatchError(f"{where} has action kind '{meta.action.kind}' but {src} describes '{name}', an arm "
                                  "driven by Cartesian targets (kind: arm); give that robot's joint config such as "
                                  "launch/robots/go1.yaml")


def check_compatibility(meta: PolicyMetadata, robot: RobotConfig, onnx_inputs: dict[str, list[object]],
                        onnx_outputs: dict[str, list[object]], where: str) -> None:
    """Refuse a policy that does not fit the robot.

    Args:
        meta: The policy's metadata.
        robot: The robot config.
        onnx_inputs: Graph input name -> shape (ints or symbolic names).
        onnx_outputs: Graph output name -> shape.
        where: The policy file, for messages.

    Raises:
        PolicyMismatchError: The first mismatch found, named in one sentence.
    """
    check_robot_kind(meta, robot, where)
    src = robot.source
    action = meta.action
    if not isinstance(action, JointPositionAction):
        raise PolicyMismatchError(f"{where} has action kind '{action.kind}' but the joint policy runner drives "
                                  f"'{JointPositionAction.kind}' policies only")
    check_observation_inputs(meta, onnx_inputs, where, "joint policy runner")
    if meta.robot.lower() != robot.name.lower():
        raise PolicyMismatchError(f"{where} was trained for robot '{meta.robot}' but {src} describes '{robot.name}'")
    names, want = list(meta.action_names), list(robot.joint_names)
    if names != want:
        missing = [j for j in want if j not in names]
        extra = [j for j in names if j not in want]
        if missing or extra:
            raise PolicyMismatchError(f"joint names differ: {where} lacks {missing} and has extra {extra} "
                                      f"compared with {src}")
        i = next(k for k, (a, b) in enumerate(zip(names, want, strict=True)) if a != b)
        raise PolicyMismatchError(f"joint order differs: position {i} is '{names[i]}' in {where} but "
                                  f"'{want[i]}' in {src}")
    if abs(meta.control_dt - robot.control_dt) > 1e-9:
        raise PolicyMismatchError(f"control period differs: {where} runs every {meta.control_dt} s but {src} "
                                  f"expects {robot.control_dt} s")
    if meta.onnx_input not in onnx_inputs or meta.onnx_output not in onnx_outputs:
        raise PolicyMismatchError(f"{where} has inputs {list(onnx_inputs)} and outputs {list(onnx_outputs)}; "
                                  f"policy.json names '{meta.onnx_input}' -> '{meta.onnx_output}'")
    width = _last_dim(onnx_inputs[meta.onnx_input])
    if width is not None and width != meta.obs_dim:
        raise PolicyMismatchError(f"observation size differs: {where} takes {width} inputs but policy.json "
                                  f"says obs_dim {meta.obs_dim}")
    out = _last_dim(onnx_outputs[meta.onnx_output])
    if out is not None and out != len(names):
        raise PolicyMismatchError(f"action size differs: {where} outputs {out} values for {len(names)} joints")
    for gain in ("kp", "kv"):
        have = getattr(robot, gain)
        if have is None:
            continue
        for j, a, b in zip(want, getattr(action, gain), have, strict=True):
            if abs(a - b) > robot.gain_tolerance * max(abs(b), 1e-9):
                raise PolicyMismatchError(f"gain '{gain}' of joint '{j}' is {a} in {where} but {b} in {src}")
    for j, q, lo, hi in zip(want, action.default_pos, robot.joint_lower, robot.joint_upper, strict=True):
        if not lo <= q <= hi:
            raise PolicyMismatchError(f"default pose of joint '{j}' ({q}) lies outside [{lo}, {hi}] from {src}")


class PolicyRunner:
    """Loads `policy.onnx` + `policy.json`, checks them against the robot, and maps state to targets.

    Args:
        policy_path: The ONNX file; its metadata is the `.json` file beside it.
        robot: The robot it will drive.
        cfg: Ramp-in and inference settings.

    Raises:
        MetadataError: Missing or malformed metadata.
        PolicyMismatchError: The policy does not fit the robot.
    """

    def __init__(self, policy_path: str | Path, robot: RobotConfig, cfg: RunnerConfig | None = None) -> None:
        import onnxruntime as ort

        self.cfg = cfg or RunnerConfig()
        path = Path(policy_path)
        if not path.is_file():
            raise MetadataError(f"policy file not found: {path}")
        self.meta = load_metadata(path.with_suffix(".json"))
        self.robot = robot
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.cfg.threads
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise MetadataError(f"{path} is not a loadable ONNX model: {exc}") from exc
        ins = {i.name: list(i.shape) for i in self.session.get_inputs()}
        outs = {o.name: list(o.shape) for o in self.session.get_outputs()}
        self._check_policy(ins, outs, str(path))
        n = self.num_actions = len(self.meta.action_names)
        self.last_action = np.zeros(n)
        self._setup()
        self._feed = {self.meta.onnx_input: None}
        # Camera inputs (a policy with an image encoder inside): the caller sets frames with `set_image`.
        self.images = ImageInputs(self.meta, self.cfg.max_image_age_s)
        self._fetch = [self.meta.onnx_output]
        # An action-chunking policy takes its own past chunks as inputs (s2r.real.chunking); the runner keeps
        # them, so the graph itself stays stateless and the same file runs in sim and here.
        chunk = self.meta.chunking
        self.chunks = ChunkHistory(1, chunk.size, n) if chunk else None
        if chunk:
            missing = {chunk.state_input, chunk.mask_input} - set(ins) or {chunk.state_output} - set(outs)
            if missing:
                raise PolicyMismatchError(f"{path}: policy.json describes an action-chunking graph but the graph lacks "
                                          f"{sorted(missing)}")
            self._fetch.append(chunk.state_output)

    def _check_policy(self, ins: dict[str, list[object]], outs: dict[str, list[object]], where: str) -> None:
        """Refuse a policy that does not fit the robot (subclasses for other action kinds replace this)."""
        check_compatibility(self.meta, self.robot, ins, outs, where)

    def _setup(self) -> None:
        """The observation builder and the action mapping, once the policy is known to fit."""
        self.builder = ObservationBuilder(self.meta, self.robot.num_joints)
        self._scale = np.asarray(self.meta.action.scale)
        self._offset = np.asarray(self.meta.action.offset)
        self._ramp_steps = max(1, round(self.cfg.ramp_s / self.robot.control_dt))
        self._ramp_k = self._ramp_steps
        self._ramp_start = np.zeros(self.num_actions)

    @property
    def ramping(self) -> bool:
        """True while targets still blend from the starting pose."""
        return self._ramp_k < self._ramp_steps

    def reset(self, current_pos: np.ndarray) -> None:
        """Start afresh from the measured joint positions: empty history, zero last action, new ramp."""
        self.builder.reset()
        if self.chunks is not None:
            self.chunks.reset()
        self.last_action[:] = 0.0
        self._ramp_start = np.array(current_pos, dtype=np.float64)
        self._ramp_k = 0

    def set_image(self, camera: str, frame: np.ndarray, stamp: float | None = None) -> None:
        """Give the newest (H, W, C) uint8 RGB frame of a camera the policy reads (see `ImageInputs.set`)."""
        self.images.set(camera, frame, stamp)

    def infer(self, state: RobotState, command: np.ndarray, now: float | None = None) -> np.ndarray:
        """Run the policy on the current state (and camera frames); returns its raw output (unchecked).

        Raises:
            CameraError: The policy reads a camera that has given no frame, or none since `max_image_age_s`.
        """
        if self.images.inputs:
            self._feed.update(self.images.feed(now))
        self._feed[self.meta.onnx_input] = self.builder.build(state, command, self.last_action)
        if self.chunks is None:
            return self.session.run(self._fetch, self._feed)[0]
        action, chunk = self.session.run(self._fetch, {**self._feed, **self.chunks.feed()})
        self.chunks.push(chunk)
        return action

    def dry_run(self, state: RobotState, command: np.ndarray) -> None:
        """Compute a frame and run the graph on the last input, changing nothing (keeps caches warm)."""
        self.builder.frame(state, command, self.last_action)
        feed = {self.meta.onnx_input: self.builder.current_input}
        if self.images.inputs:
            feed.update(self.images.current())
        if self.chunks is not None:
            feed.update(self.chunks.feed())
        self.session.run(self._fetch, feed)

    def accept(self, action: np.ndarray) -> np.ndarray:
        """Take a checked action: remember it for the next observation and return the joint targets."""
        a = np.clip(np.reshape(action, self.num_actions), -self.cfg.action_clip, self.cfg.action_clip)
        self.last_action[:] = a
        target = self._offset + self._scale * a
        if self._ramp_k < self._ramp_steps:
            self._ramp_k += 1
            alpha = self._ramp_k / self._ramp_steps
            target = self._ramp_start + alpha * (target - self._ramp_start)
        return target
