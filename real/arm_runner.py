"""The arm policy runner: an `ee_delta` policy checked against an arm config, producing Cartesian proposals.

The runner shares the joint runner's loading, action chunking and (inside the graph) residual heads; what
differs is the check, the observation terms (`s2r.real.arm.ARM_TERMS`) and the action mapping: the TCP
target moves by `action[:3] * max_step` from the previous (safety-limited) target, and the gripper action
maps onto a width between the policy's closed and open widths, exactly as the Panda tasks do. The limits
themselves (workspace box, step, speed, lead, gripper stroke) belong to `s2r.real.arm_safety`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from s2r.real.arm import ARM_TERMS, ArmConfig, ArmKinematics
from s2r.real.metadata import EeDeltaAction, MetadataError, PolicyMetadata, load_metadata
from s2r.real.observation import ObservationBuilder
from s2r.real.robot import RobotConfig
from s2r.real.runner import (
    PolicyMismatchError,
    PolicyRunner,
    RunnerConfig,
    _last_dim,
    check_observation_inputs,
    check_robot_kind,
)


def check_arm_compatibility(meta: PolicyMetadata, arm: ArmConfig, onnx_inputs: dict[str, list[object]],
                            onnx_outputs: dict[str, list[object]], where: str) -> None:
    """Refuse an arm policy that does not fit the arm config.

    Args:
        meta: The policy's metadata.
        arm: The arm config.
        onnx_inputs: Graph input name -> shape (ints or symbolic names).
        onnx_outputs: Graph output name -> shape.
        where: The policy file, for messages.

    Raises:
        PolicyMismatchError: The first mismatch found, named in one sentence.
    """
    check_robot_kind(meta, arm, where)
    src, action = arm.source, meta.action
    assert isinstance(action, EeDeltaAction)
    check_observation_inputs(meta, onnx_inputs, where, "arm runner")
    if meta.robot.lower() != arm.name.lower():
        raise PolicyMismatchError(f"{where} was trained for robot '{meta.robot}' but {src} describes '{arm.name}'")
    if abs(meta.control_dt - arm.control_dt) > 1e-9:
        raise PolicyMismatchError(f"control period differs: {where} runs every {meta.control_dt} s but {src} "
                                  f"expects {arm.control_dt} s")
    if meta.onnx_input not in onnx_inputs or meta.onnx_output not in onnx_outputs:
        raise PolicyMismatchError(f"{where} has inputs {list(onnx_inputs)} and outputs {list(onnx_outputs)}; "
                                  f"policy.json names '{meta.onnx_input}' -> '{meta.onnx_output}'")
    width = _last_dim(onnx_inputs[meta.onnx_input])
    if width is not None and width != meta.obs_dim:
        raise PolicyMismatchError(f"observation size differs: {where} takes {width} inputs but policy.json "
                                  f"says obs_dim {meta.obs_dim}")
    n = len(action.names)
    out = _last_dim(onnx_outputs[meta.onnx_output])
    if out is not None and out != n:
        raise PolicyMismatchError(f"action size differs: {where} outputs {out} values for {n} actions")
    translation = [i for i in range(n) if i != action.gripper_index]
    if len(translation) != 3:
        raise PolicyMismatchError(f"{where} has {len(translation)} translation actions {list(action.names)}; the arm "
                                  "runner moves the TCP in x, y, z (plus an optional gripper)")
    step = math.sqrt(3.0) * action.max_step * action.clip  # the largest TCP move one action asks for
    if step > arm.max_target_step + 1e-12 or step / arm.control_dt > arm.max_speed + 1e-9:
        raise PolicyMismatchError(f"{where} moves the TCP up to {step:.4f} m per {arm.control_dt} s step "
                                  f"({step / arm.control_dt:.2f} m/s) but {src} allows {arm.max_target_step} m and "
                                  f"{arm.max_speed} m/s; raise the limits there if the arm can take it, or retrain "
                                  "with a smaller arm.max_step")
    if action.gripper_index is not None:
        if not arm.gripper_joint_names:
            raise PolicyMismatchError(f"{where} commands a gripper but {src} lists no 'gripper_joint_names'")
        closed, opened = action.gripper_width
        lo, hi = arm.gripper_width
        if not lo - 1e-9 <= min(closed, opened) <= max(closed, opened) <= hi + 1e-9:
            raise PolicyMismatchError(f"{where} drives the gripper between {closed} and {opened} m but {src} allows "
                                      f"widths [{lo}, {hi}] m")


class ArmRunner(PolicyRunner):
    """Loads an `ee_delta` policy, checks it against an arm config, and maps actions to Cartesian proposals.

    Args:
        policy_path: The ONNX file; its metadata is the `.json` file beside it.
        arm: The arm it will drive.
        cfg: Inference settings (`ramp_s` does not apply: the target starts at the measured TCP).

    Raises:
        MetadataError: Missing or malformed metadata.
        PolicyMismatchError: The policy does not fit the arm.
    """

    robot: ArmConfig  # type: ignore[assignment]

    def __init__(self, policy_path: str | Path, arm: ArmConfig, cfg: RunnerConfig | None = None) -> None:
        super().__init__(policy_path, arm, cfg)  # type: ignore[arg-type]

    def _check_policy(self, ins: dict[str, list[object]], outs: dict[str, list[object]], where: str) -> None:
        check_arm_compatibility(self.meta, self.robot, ins, outs, where)

    def _setup(self) -> None:
        act = self.meta.action
        self.builder = ObservationBuilder(self.meta, self.robot.num_joints, ARM_TERMS)
        self.kinematics = ArmKinematics(self.robot.kinematic_chain)
        self._clip = act.clip
        self._step = act.max_step
        self._grip = act.gripper_index
        self._xyz = np.array([i for i in range(self.num_actions) if i != act.gripper_index])

    @property
    def ramping(self) -> bool:
        """An arm policy starts from the measured TCP, so it never blends in."""
        return False

    def reset(self, current_pos: np.ndarray | None = None) -> None:
        """Start afresh: empty history, zero last action (the caller restarts the target at the TCP)."""
        self.builder.reset()
        if self.chunks is not None:
            self.chunks.reset()
        self.last_action[:] = 0.0

    def propose(self, action: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float | None]:
        """Take a checked action: the TCP target it asks for from `target`, and the gripper width (m).

        Returns:
            The proposed TCP position (3,) before any safety limit, and the gripper width (None: no gripper).
        """
        a = np.clip(np.reshape(action, self.num_actions), -self._clip, self._clip)
        self.last_action[:] = a
        proposed = target + a[self._xyz] * self._step
        if self._grip is None:
            return proposed, None
        act = self.meta.action
        closed, opened = act.gripper_width
        frac_open = (act.gripper_closed - a[self._grip]) / (2.0 * act.gripper_closed)
        return proposed, float(closed + (opened - closed) * frac_open)


def make_runner(policy_path: str | Path, robot: RobotConfig | ArmConfig,
                cfg: RunnerConfig | None = None) -> PolicyRunner:
    """The runner for a policy's action kind: `ArmRunner` for `ee_delta`, `PolicyRunner` for joint targets.

    Raises:
        MetadataError: Missing or malformed metadata.
        PolicyMismatchError: The policy does not fit the robot config (including an arm policy given a joint
            robot's config and the reverse).
    """
    if not Path(policy_path).is_file():
        raise MetadataError(f"policy file not found: {policy_path}")
    meta = load_metadata(Path(policy_path).with_suffix(".json"))
    check_robot_kind(meta, robot, str(policy_path))
    if isinstance(robot, ArmConfig):
        return ArmRunner(policy_path, robot, cfg)
    return PolicyRunner(policy_path, robot, cfg)
