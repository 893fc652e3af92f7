"""Export a trained actor to ONNX with the normaliser inside the graph, plus `policy.json`.

Every export is checked against onnxruntime on observations drawn from the task: a max abs difference
above `tol` (1e-5) is an error, so a file that reaches the robot computes what training computed.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from s2r.policies.networks import ActorCritic
from s2r.real.metadata import (
    ACTION_KINDS,
    ActionSpec,
    BoxAction,
    CommandSpec,
    EeDeltaAction,
    JointPositionAction,
    NoCommand,
    ObsInput,
    PolicyMetadata,
    SegmentTimeRatioAction,
    TermSpec,
    VelocityCommand,
    WaypointsCommand,
)
from s2r.sim.env import EnvSpec
from torch import nn


class ExportError(RuntimeError):
    """The exported graph does not reproduce the torch policy, or the env spec does not say what the metadata needs."""


# m, finger-pad distance (closed, open) of the Franka Hand, for a Panda spec that does not state its gripper width.
_FRANKA_HAND_WIDTH = (0.0, 0.08)


class _ExportedActor(nn.Module):
    """normalise -> actor MLP -> mean action; what runs on the robot."""

    def __init__(self, model: ActorCritic) -> None:
        super().__init__()
        self.model = model

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.model.act_mean(obs)


def image_inputs(spec: EnvSpec, groups: tuple[str, ...]) -> tuple[ObsInput, ...]:
    """One uint8 (H, W, C) camera input per image group, named after the group (what an image encoder reads).

    Raises:
        ExportError: A group is not an image group of the spec.
    """
    out = []
    for g in groups:
        group = spec.groups.get(g)
        if group is None or group.image is None:
            raise ExportError(f"observation group '{g}' is not an image group of this task; the exported encoder reads "
                              "camera images only")
        out.append(ObsInput(name=g, group=g, shape=tuple(group.shape), dtype="uint8", camera=group.image.camera))
    return tuple(out)


def build_metadata(spec: EnvSpec, task_id: str, obs_dim: int, *, algo: str = "ppo", task_cfg: Any = None,
                   onnx_input: str = "obs", images: tuple[ObsInput, ...] = ()) -> PolicyMetadata:
    """The policy.json contract (schema version 2) for an actor reading the env's `policy` group.

    The action kind comes from `spec.extras["action_space"]` ("joint_position" when absent, "ee_delta",
    "segment_time_ratio", "box"); the command kind from the policy group's terms (a `velocity_command` term:
    velocity, `waypoints`: waypoints, else none), with the velocity ranges of `task_cfg.commands` (the
    registered task config when not given).

    Args:
        spec: The env's spec.
        task_id: Task id recorded in the metadata; its first dash-separated part names the robot.
        obs_dim: Width of the exported graph's observation input.
        algo: Id of the algorithm that trained the policy.
        task_cfg: The task config the policy was trained with (for the command ranges).
        onnx_input: ONNX name of the observation input.
        images: Camera inputs after the vector one (`image_inputs`), for a policy with an image encoder inside.

    Raises:
        ExportError: The spec names an unknown action space or lacks what its action kind needs.
    """
    terms, start = [], 0
    for t in spec.obs_terms["policy"]:
        terms.append(TermSpec(name=t.name, start=start, size=t.size, scale=tuple(float(s) for s in t.scale),
                              offset_from_default=t.offset_from_default))
        start += t.size
    obs = ObsInput(name=onnx_input, group="policy", terms=tuple(terms), history_length=spec.history_length,
                   shape=(obs_dim,))
    meta = PolicyMetadata(task_id=task_id, robot=task_id.split("-")[0], algo=algo, control_dt=float(spec.control_dt),
                          observation=(obs, *images), action=action_spec(spec), command=command_spec(spec, task_id, task_cfg))
    meta.validate()
    return meta


def _floats(values: Any, n: int) -> tuple[float, ...]:
    """A per-action tuple from a scalar or a list."""
    arr = np.broadcast_to(np.asarray(values, dtype=np.float64), (n,))
    return tuple(float(v) for v in arr)


def action_spec(spec: EnvSpec) -> ActionSpec:
    """The typed action kind of an env, from `spec.extras` (see `build_metadata`)."""
    ex, n, names = spec.extras, spec.action_dim, tuple(spec.action_names)
    # The waypoint task declares its ratio range but no action_space key: its actions are segment-time ratios.
    default = "segment_time_ratio" if {"max_ratio", "max_waypoints"} <= set(ex) else "joint_position"
    kind = ex.get("action_space", default)
    if kind == "joint_position":
        default_pos = _floats(ex.get("default_joint_pos", 0.0), n)
        return JointPositionAction(names=names, scale=_floats(ex.get("action_scale", 1.0), n), offset=default_pos,
                                   default_pos=default_pos, lower=_floats(ex.get("joint_lower", -np.inf), n),
                                   upper=_floats(ex.get("joint_upper", np.inf), n), kp=_floats(ex.get("kp", 0.0), n),
                                   kv=_floats(ex.get("kv", 0.0), n))
    if kind == "ee_delta":
        if "max_step" not in ex:
            raise ExportError("spec.extras has action_space 'ee_delta' but no 'max_step' (m per step at |action| = 1)")
        # Today's Panda spec carries its action clip as the (misnamed) joint box; an explicit key wins.
        clip = float(ex.get("action_clip", max(ex.get("joint_upper", [1.0]))))
        return EeDeltaAction(names=names, max_step=float(ex["max_step"]), clip=clip,
                             gripper_index=names.index("gripper") if "gripper" in names else None,
                             gripper_width=tuple(float(v) for v in ex.get("gripper_width", _FRANKA_HAND_WIDTH)))
    if kind == "segment_time_ratio":
        return SegmentTimeRatioAction(names=names, max_ratio=float(ex["max_ratio"]), max_waypoints=int(ex["max_waypoints"]))
    if kind == "box":
        if "action_low" not in ex or "action_high" not in ex:
            raise ExportError("spec.extras has action_space 'box' but lacks 'action_low' / 'action_high'")
        low, high = np.asarray(_floats(ex["action_low"], n)), np.asarray(_floats(ex["action_high"], n))
        bounded = np.isfinite(low) & np.isfinite(high)
        # Network outputs in [-1, 1] map onto a bounded box; an unbounded dimension passes through unchanged.
        lo, hi = np.where(bounded, low, -1.0), np.where(bounded, high, 1.0)
        scale, offset = (hi - lo) / 2.0, (hi + lo) / 2.0
        return BoxAction(names=names, low=tuple(low.tolist()), high=tuple(high.tolist()),
                         scale=_floats(ex.get("action_scale", scale), n), offset=_floats(ex.get("action_offset", offset), n))
    raise ExportError(f"spec.extras['action_space'] is {kind!r}; known action spaces: {', '.join(ACTION_KINDS)}")


def command_spec(spec: EnvSpec, task_id: str, task_cfg: Any = None) -> CommandSpec:
    """The typed command kind of an env, from its `policy` terms (see `build_metadata`)."""
    names = {t.name for t in spec.obs_terms["policy"]}
    if "waypoints" in names:
        return WaypointsCommand()
    if "velocity_command" not in names:
        return NoCommand()
    if task_cfg is None:
        from s2r.sim import UnknownTaskError, task_config

        try:
            task_cfg = task_config(task_id)
        except UnknownTaskError:
            task_cfg = None
    c = getattr(task_cfg, "commands", None)
    if c is None:
        return VelocityCommand()
    return VelocityCommand(vx=tuple(map(float, c.lin_vel_x)), vy=tuple(map(float, c.lin_vel_y)),
                           wz=tuple(map(float, c.ang_vel_z)))


def export_policy(model: ActorCritic, spec: EnvSpec, task_id: str, out_dir: str | Path,
                  parity_obs: np.ndarray, tol: float = 1e-5, *, algo: str = "ppo", task_cfg: Any = None) -> dict[str, float]:
    """Write `policy.onnx` + `policy.json` into out_dir and check parity with onnxruntime.

    Args:
        model: Trained actor-critic (only the actor and its normaliser are exported).
        spec: The env's spec (observation terms, actions, control period).
        task_id: Registered task id, recorded in the metadata.
        out_dir: Folder to write into (created if missing).
        parity_obs: (n, obs_dim) observations drawn from the task.
        tol: Largest allowed absolute difference between torch and onnxruntime.
        algo: Id of the algorithm that trained the actor (recorded in policy.json).
        task_cfg: The task config it was trained with (velocity command ranges; see `build_metadata`).

    Returns:
        {"max_abs_diff": ..., "n": ...}

    Raises:
        ExportError: Parity fails (the files are still written, for inspection, with a .bad suffix).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    actor = _ExportedActor(model).eval()
    obs_dim = model.actor_dim
    if parity_obs.ndim != 2 or parity_obs.shape[1] != obs_dim:
        raise ExportError(f"parity observations have shape {parity_obs.shape}; the actor reads {obs_dim} values")
    meta = build_metadata(spec, task_id, obs_dim, algo=algo, task_cfg=task_cfg)
    return export_onnx_checked(actor, (torch.zeros(1, obs_dim),), ["obs"], ["actions"], out,
                               {"obs": parity_obs.astype(np.float32)}, meta, tol)


def export_onnx_checked(module: nn.Module, example_inputs: tuple[torch.Tensor, ...], input_names: list[str],
                        output_names: list[str], out_dir: Path, parity_feed: dict[str, np.ndarray],
                        meta: PolicyMetadata, tol: float = 1e-5) -> dict[str, float]:
    """Export `module` to out_dir/policy.onnx only if onnxruntime reproduces torch, then write policy.json.

    The graph is written to a temporary file first and moved into place after the parity check, so a
    policy.onnx that exists always passed it; every input and output gets a dynamic batch axis.

    Args:
        module: Graph to export, in eval mode; called with the parity feed's inputs in `input_names` order.
        example_inputs: Tracing inputs (batch 1).
        input_names: ONNX input names, in the module's argument order.
        output_names: ONNX output names, in the module's output order.
        out_dir: Existing folder to write policy.onnx and policy.json into.
        parity_feed: {input name: (n, ...) array} run through both torch and onnxruntime.
        meta: Contract written to policy.json once parity holds.
        tol: Largest allowed absolute difference between torch and onnxruntime, over every output.

    Returns:
        {"max_abs_diff": ..., "n": number of parity rows}

    Raises:
        ExportError: Parity fails (the graph is kept as policy.onnx.bad for inspection; policy.json is not written).
    """
    import onnxruntime as ort

    n = len(parity_feed[input_names[0]])
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmp_onnx = Path(tmp) / "policy.onnx"
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated but exact and fast for these graphs.
            warnings.simplefilter("ignore")
            torch.onnx.export(module, example_inputs, str(tmp_onnx), input_names=input_names, output_names=output_names,
                              dynamic_axes={name: {0: "batch"} for name in [*input_names, *output_names]},
                              opset_version=17, dynamo=False)
        sess = ort.InferenceSession(str(tmp_onnx), providers=["CPUExecutionProvider"])
        got = sess.run(output_names, parity_feed)
        with torch.no_grad():
            want = module(*(torch.from_numpy(parity_feed[name]) for name in input_names))
        want = want if isinstance(want, tuple) else (want,)
        diff = max(float(np.max(np.abs(g - w.numpy()))) for g, w in zip(got, want, strict=True)) if n else 0.0
        if not np.isfinite(diff) or diff > tol:
            os.replace(tmp_onnx, out_dir / "policy.onnx.bad")
            raise ExportError(f"ONNX parity failed: max abs difference {diff:.3g} > {tol:g} on {n} observations")
        os.replace(tmp_onnx, out_dir / "policy.onnx")
    tmp_json = out_dir / "policy.json.tmp"
    tmp_json.write_text(meta.to_json())
    os.replace(tmp_json, out_dir / "policy.json")
    return {"max_abs_diff": diff, "n": float(n)}
