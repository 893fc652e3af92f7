"""Export a trained actor to ONNX with the normaliser inside the graph, plus `policy.json`.

Every export is checked against onnxruntime on observations drawn from the task: a max abs difference
above `tol` (1e-5) is an error, so a file that reaches the robot computes what training computed.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from s2r.policies.networks import ActorCritic
from s2r.real.metadata import SCHEMA_VERSION, PolicyMetadata, TermSpec
from s2r.sim.env import EnvSpec
from torch import nn


class ExportError(RuntimeError):
    """The exported graph does not reproduce the torch policy."""


class _ExportedActor(nn.Module):
    """normalise -> actor MLP -> mean action; what runs on the robot."""

    def __init__(self, model: ActorCritic) -> None:
        super().__init__()
        self.model = model

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.model.act_mean(obs)


def build_metadata(spec: EnvSpec, task_id: str, obs_dim: int) -> PolicyMetadata:
    """The policy.json contract for an actor reading the env's `policy` group."""
    terms, start = [], 0
    for t in spec.obs_terms["policy"]:
        terms.append(TermSpec(name=t.name, start=start, size=t.size, scale=tuple(float(s) for s in t.scale),
                              offset_from_default=t.offset_from_default))
        start += t.size
    ex = spec.extras
    n = spec.action_dim
    scale = ex.get("action_scale", 1.0)
    default = tuple(float(v) for v in ex.get("default_joint_pos", [0.0] * n))
    meta = PolicyMetadata(
        schema_version=SCHEMA_VERSION,
        task_id=task_id,
        robot=task_id.split("-")[0],
        obs_dim=obs_dim,
        obs_terms=tuple(terms),
        history_length=spec.history_length,
        action_names=tuple(spec.action_names),
        action_scale=(float(scale),) * n,
        action_offset=default,
        default_joint_pos=default,
        joint_lower=tuple(float(v) for v in ex.get("joint_lower", [-np.inf] * n)),
        joint_upper=tuple(float(v) for v in ex.get("joint_upper", [np.inf] * n)),
        kp=tuple(float(v) for v in ex.get("kp", [0.0] * n)),
        kv=tuple(float(v) for v in ex.get("kv", [0.0] * n)),
        control_dt=float(spec.control_dt),
    )
    meta.validate()
    return meta


def export_policy(model: ActorCritic, spec: EnvSpec, task_id: str, out_dir: str | Path,
                  parity_obs: np.ndarray, tol: float = 1e-5) -> dict[str, float]:
    """Write `policy.onnx` + `policy.json` into out_dir and check parity with onnxruntime.

    Args:
        model: Trained actor-critic (only the actor and its normaliser are exported).
        spec: The env's spec (observation terms, actions, control period).
        task_id: Registered task id, recorded in the metadata.
        out_dir: Folder to write into (created if missing).
        parity_obs: (n, obs_dim) observations drawn from the task.
        tol: Largest allowed absolute difference between torch and onnxruntime.

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
    meta = build_metadata(spec, task_id, obs_dim)
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
