"""Export of a trained planner: `policy.onnx` + `policy.json`, checked against onnxruntime."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from s2r.policies.mfrl.network import PlannerNet
from s2r.real.metadata import PlannerSection, SegmentTimeRatioAction, WaypointsCommand
from s2r.sim.config import to_dict


def export_planner(net: PlannerNet, task_id: str, task_cfg: Any, out_dir: str | Path, parity_obs: np.ndarray,
                   info: dict[str, Any] | None = None, tol: float = 1e-5) -> dict[str, float]:
    """Write `policy.onnx` (input `obs` (batch, 4k) float32, output `actions` (batch, k-1)) and `policy.json`.

    Args:
        net: Trained planner.
        task_id: Task id recorded in the metadata.
        task_cfg: The task's config (max_ratio and max_waypoints go into the action kind, the feasibility
            settings into the planner section, the whole config into `info["task_cfg"]` for evaluation).
        out_dir: Folder to write into.
        parity_obs: (n, 4k) observations from the task for the torch/onnxruntime parity check.
        info: More notes for the metadata's `info` (e.g. evaluation counts).
        tol: Largest allowed absolute difference between torch and onnxruntime.

    Returns:
        {"max_abs_diff": ..., "n": ...}

    Raises:
        ExportError: Parity fails (the graph is kept as policy.onnx.bad for inspection).
    """
    from s2r.policies.export import ExportError, build_metadata, export_onnx_checked
    from s2r.sim.tasks.quadrotor import ReplanEnv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    module = copy.deepcopy(net).float().eval()  # float32 obs -> float32 log-ratios; `net` stays float64
    spec = ReplanEnv(task_cfg, num_envs=1).spec
    if parity_obs.ndim != 2 or parity_obs.shape[1] != net.obs_dim:
        raise ExportError(f"parity observations have shape {parity_obs.shape}; the planner reads {net.obs_dim} values")
    meta = dataclasses.replace(
        build_metadata(spec, task_id, net.obs_dim, algo="mfrl"),
        action=SegmentTimeRatioAction(names=tuple(spec.action_names), max_ratio=float(task_cfg.max_ratio),
                                      max_waypoints=int(task_cfg.max_waypoints)),
        command=WaypointsCommand(),
        planner=PlannerSection(feasibility_dt=float(task_cfg.feasibility_dt), limits=dataclasses.asdict(task_cfg.limits)),
        info={"action_meaning": "segment duration = heuristic_durations(waypoints, limits) * max_ratio ** action",
              "task_cfg": to_dict(task_cfg), **(info or {})})
    meta.validate()
    x = parity_obs.astype(np.float32)
    return export_onnx_checked(module, (torch.zeros(1, net.obs_dim),), ["obs"], ["actions"], out, {"obs": x}, meta, tol)
