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
    import onnxruntime as ort

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    actor = _ExportedActor(model).eval()
    obs_dim = model.actor_dim
    if parity_obs.ndim != 2 or parity_obs.shape[1] != obs_dim:
        raise ExportError(f"parity observations have shape {parity_obs.shape}; the actor reads {obs_dim} values")
    meta = build_metadata(spec, task_id, obs_dim)
    onnx_path, json_path = out / "policy.onnx", out / "policy.json"
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        tmp_onnx = Path(tmp) / "policy.onnx"
        example = torch.zeros(1, obs_dim)
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated but exact and fast for plain MLPs.
            warnings.simplefilter("ignore")
            torch.onnx.export(actor, (example,), str(tmp_onnx), input_names=["obs"], output_names=["actions"],
                              dynamic_axes={"obs": {0: "batch"}, "actions": {0: "batch"}}, opset_version=17,
                              dynamo=False)
        sess = ort.InferenceSession(str(tmp_onnx), providers=["CPUExecutionProvider"])
        x = parity_obs.astype(np.float32)
        got = sess.run(["actions"], {"obs": x})[0]
        with torch.no_grad():
            want = actor(torch.from_numpy(x)).numpy()
        diff = float(np.max(np.abs(got - want))) if len(x) else 0.0
        if not np.isfinite(diff) or diff > tol:
            os.replace(tmp_onnx, out / "policy.onnx.bad")
            raise ExportError(f"ONNX parity failed: max abs difference {diff:.3g} > {tol:g} on {len(x)} observations")
        os.replace(tmp_onnx, onnx_path)
    tmp_json = json_path.with_suffix(".json.tmp")
    tmp_json.write_text(meta.to_json())
    os.replace(tmp_json, json_path)
    return {"max_abs_diff": diff, "n": float(len(parity_obs))}
