"""Single-observation latency of an exported Go1 policy in onnxruntime, against a bare MLP of the same size.

    python bench/onnx_latency.py            # 20k timed calls per model
    python bench/onnx_latency.py --quick    # 3k timed calls per model

Exports a freshly initialised actor for the task with `s2r.policies.export.export_policy` (normaliser in
the graph, exactly what the robot loads), and builds a bare reference MLP directly with `onnx.helper`
(Gemm + Elu layers with the actor's layer sizes, no normaliser). Both run in onnxruntime CPU sessions
limited to one thread, batch 1, after a warm-up; calls are timed one by one and interleaved in blocks so
background load hits both alike. Prints one JSON line with p50/p99/mean per model and the p99 ratio
ours / bare (the goal is at most 2x).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from s2r.policies.export import export_policy
from s2r.policies.networks import ActorCritic, ActorCriticConfig
from s2r.sim import make
from s2r.sim.env import sample_obs


def bare_mlp(path: Path, in_dim: int, hidden: tuple[int, ...], out_dim: int, seed: int = 0) -> None:
    """Write an ONNX MLP (Gemm + Elu per hidden layer, Gemm out) with random weights to `path`."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev, d = "obs", in_dim
    for i, h in enumerate((*hidden, out_dim)):
        w = numpy_helper.from_array((rng.normal(size=(d, h)) / np.sqrt(d)).astype(np.float32), f"w{i}")
        b = numpy_helper.from_array(np.zeros(h, np.float32), f"b{i}")
        inits += [w, b]
        last = i == len(hidden)
        out = "actions" if last else f"z{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out]))
        if not last:
            nodes.append(helper.make_node("Elu", [out], [f"h{i}"]))
            out = f"h{i}"
        prev, d = out, h
    graph = helper.make_graph(
        nodes, "bare_mlp",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", in_dim])],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, ["batch", out_dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def session(path: Path) -> ort.InferenceSession:
    """A one-thread CPU session with full graph optimisation."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def main() -> None:
    p = argparse.ArgumentParser(description="onnxruntime latency of an exported policy vs a bare MLP.")
    p.add_argument("--task", default="Go1-Velocity-Flat")
    p.add_argument("--iters", type=int, default=20000, help="timed calls per model")
    p.add_argument("--block", type=int, default=500, help="calls per model before switching (interleaving)")
    p.add_argument("--quick", action="store_true", help="3000 timed calls per model")
    args = p.parse_args()
    iters = 3000 if args.quick else args.iters
    torch.manual_seed(0)

    env = make(args.task, 8, seed=0)
    try:
        obs = sample_obs(env, 20, seed=0)
        cfg = ActorCriticConfig()
        model = ActorCritic(env.obs_dims, env.spec.action_dim, cfg)
        x = np.concatenate([obs[g] for g in cfg.actor_obs], axis=1)
        model.update_normalizers(torch.from_numpy(x), torch.from_numpy(np.concatenate(
            [obs[g] for g in cfg.critic_obs], axis=1)))  # non-trivial normaliser statistics
        model.eval()
        with tempfile.TemporaryDirectory() as tmp:
            parity = export_policy(model, env.spec, args.task, tmp, x)
            ours_path = Path(tmp) / "policy.onnx"
            bare_path = Path(tmp) / "bare.onnx"
            bare_mlp(bare_path, model.actor_dim, cfg.actor_hidden, env.spec.action_dim)
            sessions = {"ours": session(ours_path), "bare": session(bare_path)}
            ops = {k: [n.op_type for n in onnx.load(str(q)).graph.node] for k, q in
                   (("ours", ours_path), ("bare", bare_path))}
            one = x[:1].copy()  # (1, obs_dim)
            feeds = {"obs": one}
            for s in sessions.values():  # warm-up
                for _ in range(300):
                    s.run(["actions"], feeds)
            lat: dict[str, list[int]] = {k: [] for k in sessions}
            clock = time.perf_counter_ns
            while len(lat["ours"]) < iters:
                for name, s in sessions.items():
                    rec = lat[name]
                    for _ in range(min(args.block, iters - len(rec))):
                        t0 = clock()
                        s.run(["actions"], feeds)
                        rec.append(clock() - t0)
    finally:
        env.close()

    def summary(ns: list[int]) -> dict[str, float]:
        a = np.asarray(ns) / 1e3  # microseconds
        return {"p50_us": round(float(np.percentile(a, 50)), 2), "p99_us": round(float(np.percentile(a, 99)), 2),
                "mean_us": round(float(a.mean()), 2), "max_us": round(float(a.max()), 1)}

    ours, bare = summary(lat["ours"]), summary(lat["bare"])
    print(json.dumps({
        "bench": "onnx_latency",
        "task": args.task,
        "onnxruntime": ort.__version__,
        "threads": 1,
        "iters_per_model": iters,
        "obs_dim": int(one.shape[1]),
        "hidden": list(ActorCriticConfig().actor_hidden),
        "export_max_abs_diff": parity["max_abs_diff"],
        "graph_ops": {k: len(v) for k, v in ops.items()},
        "ours_ops": sorted(set(ops["ours"])),
        "ours": ours,
        "bare": bare,
        "ratio_p99_ours_over_bare": round(ours["p99_us"] / bare["p99_us"], 3),
        "ratio_p50_ours_over_bare": round(ours["p50_us"] / bare["p50_us"], 3),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
