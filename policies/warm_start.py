"""Warm start: initialise a PPO actor from an exported policy (ONNX + metadata) trained on related inputs.

A waypoint follower in a tunnel has to walk before it can learn where to; from scratch most of a short
budget goes into learning a gait. The shipped flat walker (tests/data/go1_walk) already has one. Its actor
MLP (normaliser, then Linear/ELU layers) is copied into the new actor: hidden and output layers as they are,
the first layer column by column for the input terms both layouts share by name and size (proprioception),
with zero weights for inputs the source never saw (waypoints, height map), so the new actor starts out as the
old one with those inputs ignored. A source term the new task lacks (e.g. the velocity command) is dropped,
which feeds the old network that term's running mean (normalised to 0).

One exception makes a walker a follower from the first step: when the source reads a `velocity_command` and
the new actor reads `waypoints` but none (and sees more than one waypoint, so the first is near), the command
columns are re-expressed through the first waypoint (dx, dy in the body frame): vx = WALK_GAIN * dx and
yaw rate = TURN_GAIN * dy (vy stays at its mean: the shipped walker was trained on forward commands only, its
vy statistics have zero variance), linear in the inputs and so exact in the first layer. A
goal-only actor (one far waypoint) gets no such map: a command proportional to a goal metres away is
nothing the walker was trained on.

Likewise for posture: when the source also reads a `crouch_command` (how far below the standing height
STAND_HEIGHT to hold the base: the crouching walker, Go1-Velocity-Height-Flat) and the new actor reads
waypoints and a `height_map` but no such command, the column is fed STAND_HEIGHT minus the height above the
floor the first waypoint asks for: its z in the body frame (the planner puts a waypoint `crouch_body_z` or
`stand_body_z` above the floor) plus the height of the base above the floor near that waypoint, read as the
mean drop of the two height-map points ahead (HEIGHT_POINTS, the waypoints are 0.25-0.4 m ahead). The sum is
the waypoint's height above the floor there, whatever the floor does under the base (with the drop under
the base instead, a step up ahead read as "stand 0.1 m taller than standing", a command the walker never
had, and the follower fell on steps: 14 of 25 falls at difficulty 0.5). Linear again, so exact in the first
layer up to the height map's noise; the follower starts out crouching where its waypoints are low.

The normaliser keeps the source's statistics with a large pseudo-count, so the copied first layer keeps
meaning what it meant (new inputs are normalised with mean 0, variance 1 until real statistics accumulate).

Only history length 1 on both sides and an MLP of the same hidden sizes are supported; anything else is
refused with a message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from s2r.policies.networks import ActorCritic, EmpiricalNormalizer

WALK_GAIN = 1.2  # (m/s) per m: a waypoint 0.4 m ahead asks ~0.5 m/s
TURN_GAIN = 1.5  # (rad/s) per m sideways
PSEUDO_COUNT = 1e6  # samples the copied statistics count for
# Height-map points whose drop, added to the first waypoint's z, gives its height above the floor: (x, y) =
# (0.1, 0) and (0.4, 0), ahead where the next waypoint is (grid rows x in GRID_XS, columns y in GRID_YS,
# x-major as RayHeightMap lays them out).
HEIGHT_POINTS = ((0.1, 0.0), (0.4, 0.0))
STAND_HEIGHT = 0.28  # (m) crouch_command 0: the confined planner's stand_body_z and the crouching walker's


class WarmStartError(ValueError):
    """The source policy does not fit the actor (its message names what and how to fix it)."""


def onnx_actor(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(initializers by name, normaliser mean, normaliser divisor sqrt(var + eps)) of an exported actor."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    tensors = {t.name: numpy_helper.to_array(t).copy() for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for out in node.output:
                tensors.setdefault(out, numpy_helper.to_array(node.attribute[0].t).copy())
    sub = next((n for n in graph.node if n.op_type == "Sub"), None)
    div = next((n for n in graph.node if n.op_type == "Div"), None)
    if sub is None or div is None:
        raise WarmStartError(f"{path} has no normaliser (Sub, Div) at its input; export it with normalize_obs=True")
    return tensors, tensors[sub.input[1]].astype(np.float64), tensors[div.input[1]].astype(np.float64)


def warm_start_actor(model: ActorCritic, onnx_path: str | Path, terms: list[tuple[str, int]],
                     history_length: int = 1) -> dict[str, Any]:
    """Copy the actor of `onnx_path` (with its `policy.json` beside it) into `model`'s actor.

    Args:
        model: The new actor-critic (its actor reads one `policy` group).
        onnx_path: The exported source policy; its metadata is the .json of the same stem.
        terms: (name, size) of the new actor's input terms, in order.
        history_length: Frames of the new actor's input (only 1 is supported).

    Returns:
        A report: matched and new term names, the dropped source terms.

    Raises:
        WarmStartError: A missing file, history lengths other than 1, or different hidden sizes.
    """
    from s2r.real.metadata import load_metadata

    onnx_path = Path(onnx_path)
    meta_path = onnx_path.with_suffix(".json")
    if not onnx_path.is_file() or not meta_path.is_file():
        raise WarmStartError(f"init_policy '{onnx_path}' needs the .onnx file and its metadata {meta_path.name} "
                             "beside it; point init_policy at an exported policy.onnx")
    src = load_metadata(meta_path).obs
    if src.history_length != 1 or history_length != 1:
        raise WarmStartError(f"init_policy warm start supports history length 1; the source has "
                             f"{src.history_length} and the task {history_length}: set history_length=1")
    tensors, mean, div = onnx_actor(onnx_path)
    layers = [m for m in model.actor if isinstance(m, torch.nn.Linear)]
    names = [f"model.actor.{i}" for i, m in enumerate(model.actor) if isinstance(m, torch.nn.Linear)]
    src_shapes = [tuple(tensors[f"{n}.weight"].shape) if f"{n}.weight" in tensors else None for n in names]
    want = [tuple(lin.weight.shape) for lin in layers]
    if [s[0] if s else None for s in src_shapes] != [w[0] for w in want]:
        raise WarmStartError(f"init_policy '{onnx_path}' has actor layers {src_shapes}, this actor {want}: set "
                             "algo.policy.actor_hidden to the source's hidden sizes")
    src_at = {t.name: (t.start, t.size) for t in src.terms}
    cols_new, cols_src, matched, new = [], [], [], []
    start = 0
    for name, size in terms:
        if name in src_at and src_at[name][1] == size:
            cols_new += range(start, start + size)
            cols_src += range(src_at[name][0], src_at[name][0] + size)
            matched.append(name)
        else:
            new.append(name)
        start += size
    if start != model.actor_dim:
        raise WarmStartError(f"the task's policy terms add up to {start} inputs but the actor reads {model.actor_dim}")
    with torch.no_grad():
        w0 = torch.zeros_like(layers[0].weight)
        w0[:, cols_new] = torch.as_tensor(tensors[f"{names[0]}.weight"][:, cols_src], dtype=w0.dtype)
        layers[0].weight.copy_(w0)
        for lin, n in zip(layers, names, strict=True):
            if lin is not layers[0]:
                lin.weight.copy_(torch.as_tensor(tensors[f"{n}.weight"]))
            lin.bias.copy_(torch.as_tensor(tensors[f"{n}.bias"]))
        norm = model.actor_norm
        if isinstance(norm, EmpiricalNormalizer):
            norm.mean.zero_()
            norm.var.fill_(1.0)
            norm.mean[cols_new] = torch.as_tensor(mean[cols_src], dtype=norm.mean.dtype)
            norm.var[cols_new] = torch.as_tensor(np.maximum(div[cols_src] ** 2 - norm.eps, 1e-6), dtype=norm.var.dtype)
            norm.count.fill_(PSEUDO_COUNT)
        mapped = _command_from_waypoints(model, layers[0], tensors[f"{names[0]}.weight"], mean, div, src_at, terms)
        height = _height_from_waypoints(model, layers[0], tensors[f"{names[0]}.weight"], mean, div, src_at, terms)
    dropped = [t.name for t in src.terms if t.name not in matched]
    return {"init_policy": str(onnx_path), "matched": matched, "new": new, "dropped": dropped,
            "command_from_waypoints": mapped, "height_from_waypoints": height}


def _command_from_waypoints(model: ActorCritic, first: torch.nn.Linear, w_src: np.ndarray, mean: np.ndarray,
                            div: np.ndarray, src_at: dict[str, tuple[int, int]], terms: list[tuple[str, int]]) -> bool:
    """Feed the source's velocity-command columns from the first waypoint (see the module docstring)."""
    names = dict(terms)
    if "velocity_command" not in src_at or "velocity_command" in names or names.get("waypoints", 0) < 6:
        return False
    if not isinstance(model.actor_norm, EmpiricalNormalizer):
        return False
    col = sum(size for name, size in terms[: [n for n, _ in terms].index("waypoints")])
    c0 = src_at["velocity_command"][0]
    # Scales of the two terms in the observation (Go1 tasks): command (2, 2, 0.25), waypoints 0.5.
    cmd_scale, wp_scale = np.array([2.0, 2.0, 0.25]), 0.5
    norm = model.actor_norm
    wp_std = float(torch.sqrt(norm.var[col] + norm.eps))  # the new columns' normaliser (mean 0)
    first.bias -= torch.as_tensor(w_src[:, c0 + 1], dtype=first.weight.dtype) * (mean[c0 + 1] / div[c0 + 1])  # vy = 0
    # command c_k = gain_k * waypoint_j; the source's normalised input u_k = (cmd_scale_k c_k - mean_k) / div_k.
    for k, j, gain in ((0, col, WALK_GAIN), (2, col + 1, TURN_GAIN)):
        w = torch.as_tensor(w_src[:, c0 + k], dtype=first.weight.dtype)
        first.weight[:, j] += w * (cmd_scale[k] * gain / wp_scale * wp_std / div[c0 + k])
        first.bias -= w * (mean[c0 + k] / div[c0 + k])
    return True


def _height_from_waypoints(model: ActorCritic, first: torch.nn.Linear, w_src: np.ndarray, mean: np.ndarray,
                           div: np.ndarray, src_at: dict[str, tuple[int, int]], terms: list[tuple[str, int]]) -> bool:
    """Feed the source's body-height column from the first waypoint's z and the height map (module docstring)."""
    from s2r.real.waypoint_follow import GRID_XS, GRID_YS

    names = dict(terms)
    if ("crouch_command" not in src_at or "crouch_command" in names or names.get("waypoints", 0) < 6
            or names.get("height_map") != 2 * len(GRID_XS) * len(GRID_YS)):
        return False
    if not isinstance(model.actor_norm, EmpiricalNormalizer):
        return False
    order = [n for n, _ in terms]
    wp_col = sum(size for name, size in terms[: order.index("waypoints")]) + 2  # the first waypoint's z
    hm_col = sum(size for name, size in terms[: order.index("height_map")])  # drops first, then headroom
    drops = [hm_col + GRID_XS.index(x) * len(GRID_YS) + GRID_YS.index(y) for x, y in HEIGHT_POINTS]
    c = src_at["crouch_command"][0]
    # Scales in the observation: crouch command 10 (as Go1-Skills-Confined), waypoints 0.5, height map 2.
    c_scale, wp_scale, hm_scale = 10.0, 0.5, 2.0
    norm = model.actor_norm
    w_c = torch.as_tensor(w_src[:, c], dtype=first.weight.dtype)
    w = w_c * (c_scale / div[c])
    # crouch = STAND_HEIGHT - (z_wp + mean(drops)); the new columns' normaliser has mean 0, so input j carries
    # obs_j / std_j; the source's normalised input is (c_scale * crouch - mean_c) / div_c.
    first.weight[:, wp_col] -= w * float(torch.sqrt(norm.var[wp_col] + norm.eps)) / wp_scale
    for j in drops:
        first.weight[:, j] -= w * float(torch.sqrt(norm.var[j] + norm.eps)) / (hm_scale * len(drops))
    first.bias += w * STAND_HEIGHT - w_c * (mean[c] / div[c])
    return True
