"""Waypoint-planner exports for robot-side tests: small torch MLPs exported to ONNX with a policy.json in the
layout `policies/mfrl/export.py` wrote in schema version 1 (extras.planner = "mfrl"), some misbehaving on purpose.

They stay version 1 on purpose: the robot side converts them on load, so every planner test here also checks
that conversion (the current export, version 2, is checked by tests/real/test_planner.py's real export)."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np

TASK = "Crazyflie-Replan-Waypoints"
MAX_WAYPOINTS = 6
MAX_RATIO = 3.0


def planner_metadata(k: int = MAX_WAYPOINTS, **extras: object) -> dict:
    """Version 1 policy.json contents of a planner reading k waypoints (extras as the mfrl export wrote them)."""
    from s2r.real.metadata import TermSpec
    from s2r.real.metadata_v1 import MetadataV1
    from s2r.real.trajectory import QuadLimits

    n = k - 1
    meta = MetadataV1(
        schema_version=1, task_id=TASK, robot="Crazyflie", obs_dim=4 * k,
        obs_terms=(TermSpec(name="waypoints", start=0, size=3 * k, scale=(1.0,)),
                   TermSpec(name="waypoint_mask", start=3 * k, size=k, scale=(1.0,))),
        history_length=1, action_names=tuple(f"segment{i}_log_ratio" for i in range(n)),
        action_scale=(1.0,) * n, action_offset=(0.0,) * n, default_joint_pos=(0.0,) * n,
        joint_lower=(-1.0,) * n, joint_upper=(1.0,) * n, kp=(0.0,) * n, kv=(0.0,) * n, control_dt=1.0,
        extras={"planner": "mfrl", "max_waypoints": k, "max_ratio": MAX_RATIO, "feasibility_dt": 0.01,
                "limits": dataclasses.asdict(QuadLimits(min_height=0.1)), **extras})
    meta.validate()
    return dataclasses.asdict(meta)


def write_planner(out_dir: Path, *, bias: float = 0.0, weight_std: float = 0.05, in_width: int | None = None,
                  out_width: int | None = None, k: int = MAX_WAYPOINTS, seed: int = 0, **extras: object) -> Path:
    """A planner export: obs (batch, in_width) -> tanh MLP -> actions (batch, out_width); returns its folder.

    Args:
        out_dir: Folder to write policy.onnx and policy.json into.
        bias: Bias of every output (-1: all segments 1/max_ratio of the heuristic; NaN: a broken network).
        weight_std: Std of the output layer's weights (0 makes the output exactly `bias`).
        in_width: Graph input width (default 4k, what the metadata says).
        out_width: Graph output width (default k - 1).
        k: max_waypoints of the metadata.
        seed: Weight seed.
        extras: Metadata extras to add or override.
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(in_width or 4 * k, 32), nn.Tanh(), nn.Linear(32, out_width or k - 1))
    with torch.no_grad():
        if weight_std > 0:
            net[2].weight.normal_(0.0, weight_std)
        else:
            net[2].weight.zero_()
        net[2].bias.fill_(bias)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(net.eval(), (torch.zeros(1, in_width or 4 * k),), str(out / "policy.onnx"),
                          input_names=["obs"], output_names=["actions"],
                          dynamic_axes={"obs": {0: "batch"}, "actions": {0: "batch"}}, opset_version=17, dynamo=False)
    (out / "policy.json").write_text(json.dumps(planner_metadata(k, **extras), indent=2))
    return out


def random_waypoints(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, 3) waypoints like the task draws them: a 4 m x 4 m box, 1-2.5 m high, >= 0.5 m apart."""
    pts = [rng.uniform([-2.0, -2.0, 1.0], [2.0, 2.0, 2.5])]
    while len(pts) < count:
        p = rng.uniform([-2.0, -2.0, 1.0], [2.0, 2.0, 2.5])
        if np.linalg.norm(p - pts[-1]) >= 0.5:
            pts.append(p)
    return np.array(pts)
