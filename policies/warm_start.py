"""Warm start: initialise a PPO actor from an exported policy (ONNX + metadata) trained on related inputs.

A waypoint follower in a tunnel has to walk before it can learn where to; from scratch most of a short
budget goes into learning a gait. The shipped flat walker (tests/data/go1_walk) already has one. Its actor
MLP (normaliser, then Linear/ELU layers) is copied into the new actor: hidden and output layers as they are,
the first layer column by column for the input terms both layouts share by name and size (proprioception),
with zero weights for inputs the source never saw (waypoints, height map), so the new actor starts out as the
old one with those inputs ignored. A source term the new task lacks (e.g. the velocity command) is dropped,
which feeds the old network that term's running mean (normalised to 0).

Only history length 1 on both sides and an MLP of the same hidden sizes are supported; anything else is
refused with a message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from s2r.policies.networks import ActorCritic, EmpiricalNormalizer


class WarmStartError(ValueError):
    """The source policy does not fit the actor (its message names what and how to fix it)."""


def _onnx_actor(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(initializers by name, normaliser mean, normaliser divisor sqrt(var + eps)) of an exported actor."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    tensors = {t.name: numpy_helper.to_array(t).copy() for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for out in node.output:
                tensors.setdefault(out, numpy_helper.to_array(node.attribute[0].t))
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
    tensors, mean, div = _onnx_actor(onnx_path)
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
            # Count 0: the first rollout's statistics replace these at once, which gives the new inputs real
            # statistics; the shared ones come from the same kind of states (walking), so they barely move.
            norm.count.zero_()
    dropped = [t.name for t in src.terms if t.name not in matched]
    return {"init_policy": str(onnx_path), "matched": matched, "new": new, "dropped": dropped}
