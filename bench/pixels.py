"""SAC on Panda-Lift-Cube from a camera image + proprioception against the same SAC from state, equal env steps.

    python bench/pixels.py --steps 4000 --seed 0 --image-size 64 --batch 64 --out bench/results/pixels.json

Variants (same learner settings, same env steps, same seed):

- `state`: the task's `policy` group as it is (robot terms + the object's position from the simulator).
- `pixels`: the `policy` group without the object terms (`object_in_policy=False`) + a 64x64 `workspace` camera
  image through the DrQ-style encoder (`learner.encoder.image_groups=("image",)`), random shift 4 px.
- `blind` (optional): the object-free `policy` group alone, a floor: what the proprioception says without the image.

The encoder trains from scratch: no pretrained weights can be downloaded here. Each run goes through the run driver
(replay on disk, export with onnxruntime parity); success is then measured on the exported ONNX policy over
`--episodes` fresh episodes (`evaluate_success`, camera inputs fed from the env's image group). Separately, the
learner's update rate is timed on random batches of the run's shapes (`--update-iters` updates, one torch
thread), so it is not diluted by rendering and physics. Writes one JSON with the command, load average, wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

TASK = "Panda-Lift-Cube"


def variant_settings(name: str, size: int, batch: int, pad: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(task overrides, sac overrides) of a variant."""
    algo: dict[str, Any] = {"learner.batch_size": batch}
    if name == "state":
        return {}, algo
    if name == "blind":
        return {"object_in_policy": False}, algo
    if name == "pixels":
        return ({"object_in_policy": False, "image": True, "image_size": (size, size)},
                {**algo, "learner.encoder.image_groups": ("image",), "learner.encoder.pad": pad})
    raise SystemExit(f"unknown variant {name!r}; choose from state, pixels, blind")


def update_rate(spec: Any, iters: int) -> float:
    """Learner updates per second on random batches of the run's observation shapes (one torch thread)."""
    import torch
    from s2r.policies.offpolicy import OffPolicyLearner
    from s2r.policies.replay import Batch
    from s2r.sim import make

    env = make(spec.task_id, 1, cfg=spec.task_cfg, seed=0)
    lc = spec.cfg.learner
    groups = (*lc.actor_obs, *lc.encoder.image_groups)
    shapes, dtypes = {g: env.obs_shapes[g] for g in groups}, {g: env.obs_dtypes[g] for g in groups}
    a_dim = env.spec.action_dim
    env.close()
    learner = OffPolicyLearner(shapes, a_dim, lc, obs_dtypes=dtypes)
    g = torch.Generator().manual_seed(0)
    n = lc.batch_size

    def obs() -> dict[str, torch.Tensor]:
        return {k: torch.randint(0, 256, (n, *s), generator=g, dtype=torch.uint8) if dtypes[k] == "uint8"
                else torch.randn(n, *s, generator=g) for k, s in shapes.items()}

    batches = [Batch(obs=obs(), action=torch.rand(n, a_dim, generator=g) * 2 - 1, reward=torch.randn(n, generator=g),
                     next_obs=obs(), discount=torch.full((n,), 0.99)) for _ in range(4)]
    for b in batches[:2]:
        learner.update(b)  # warm-up (allocator, first-call costs)
    t = time.perf_counter()
    for i in range(iters):
        learner.update(batches[i % 4])
    return iters / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=4000, help="env steps per variant")
    p.add_argument("--num-envs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--pad", type=int, default=4)
    p.add_argument("--learning-starts", type=int, default=1000)
    p.add_argument("--episodes", type=int, default=50, help="evaluation episodes of the exported policy")
    p.add_argument("--update-iters", type=int, default=30)
    p.add_argument("--variants", nargs="+", default=["state", "pixels"])
    p.add_argument("--work", default="runs/bench_pixels")
    p.add_argument("--out", default="bench/results/pixels.json")
    p.add_argument("--rates-only", type=int, nargs="*", metavar="SIZE",
                   help="only time learner updates/s of the pixel learner at these image sizes (no training)")
    args = p.parse_args()

    import torch

    torch.set_num_threads(1)
    from s2r.policies.driver import Budget, new_run_spec, train
    from s2r.policies.evaluate import evaluate_success

    out: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "task": TASK,
                           "seed": args.seed, "steps": args.steps, "num_envs": args.num_envs,
                           "image_size": args.image_size, "batch_size": args.batch, "pad": args.pad,
                           "pretrained_encoder": False, "torch_threads": 1,
                           "loadavg_start": os.getloadavg(), "variants": {}}
    if args.rates_only:
        out["updates_per_s_random_batches"] = {}
        for size in args.rates_only:
            task_over, algo_over = variant_settings("pixels", size, args.batch, args.pad)
            spec = new_run_spec("sac", TASK, task_overrides=task_over, algo_overrides=algo_over, seed=args.seed)
            out["updates_per_s_random_batches"][f"{size}px"] = rate = update_rate(spec, args.update_iters)
            print(f"[pixels {size}px] learner updates/s on random batches: {rate:.2f}", flush=True)
        out["loadavg_end"] = os.getloadavg()
        Path(args.out).write_text(json.dumps(out, indent=2))
        return
    for name in args.variants:
        task_over, algo_over = variant_settings(name, args.image_size, args.batch, args.pad)
        algo_over.update({"torch_threads": 1, "learning_starts": args.learning_starts, "eval_every": 0,
                          "eval_episodes": 0, "buffer_capacity": max(args.steps, 1000)})
        spec = new_run_spec("sac", TASK, task_overrides=task_over, algo_overrides=algo_over, num_envs=args.num_envs,
                            seed=args.seed, budget=Budget(steps=args.steps))
        rate = update_rate(spec, args.update_iters)
        print(f"[{name}] learner updates/s on random batches: {rate:.2f}", flush=True)
        run = Path(args.work) / f"{name}_s{args.seed}"
        t = time.perf_counter()
        res = train(spec, run, progress=False, restart=True)
        wall = time.perf_counter() - t
        rows = json.loads((run / "history.json").read_text())
        updates = max((r.get("updates", 0.0) for r in rows), default=0.0)
        t = time.perf_counter()
        success = evaluate_success(run, episodes=args.episodes, seed=1000 + args.seed)
        out["variants"][name] = {"task_overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in task_over.items()},
                                 "algo_overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in algo_over.items()},
                                 "updates_per_s_random_batches": rate, "train_wall_s": wall, "updates": updates,
                                 "updates_per_s_in_run": updates / wall, "export": res.get("export"),
                                 "eval": success, "eval_wall_s": time.perf_counter() - t,
                                 "loadavg_after": os.getloadavg()}
        print(f"[{name}] {json.dumps(out['variants'][name])}", flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2))
    out["loadavg_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
