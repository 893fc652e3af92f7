"""Our SAC (`s2r train gym:Pendulum-v1 --algo sac`) against Stable-Baselines3 SAC at equal env steps.

    python bench/gym_sac.py --steps 10000 --seeds 0 1 2 --out bench/results/gym_sac.json

Both learn gymnasium's Pendulum-v1 with one env, one torch thread, the SAC paper's settings (two critics,
256x256, batch 256, lr 3e-4, tau 0.005, gamma 0.99, automatic temperature from 1.0, one update per step) and
the same `learning_starts`. Ours runs through the run driver (its wall time includes the driver's
checkpoint, export and plot); SB3 is timed around `model.learn`. Each final policy is then judged the same
way: the deterministic action on 10 episodes of a fresh `gymnasium.make("Pendulum-v1")` seeded 1000..1009;
ours through its exported policy.onnx and policy.json's action mapping, as a robot-side client would run it.
Known differences that remain: our critics and actor carry LayerNorm (the off-policy core's default), SB3's
do not. Writes one JSON file with the command and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ENV_ID = "Pendulum-v1"


def judge(act: Callable[[np.ndarray], np.ndarray], episodes: int = 10) -> list[float]:
    """Returns of `episodes` deterministic episodes of a fresh gymnasium env (seeds 1000, 1001, ...)."""
    import gymnasium as gym

    env = gym.make(ENV_ID)
    out = []
    for i in range(episodes):
        obs, _ = env.reset(seed=1000 + i)
        total, done = 0.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(act(obs))
            total += float(r)
            done = term or trunc
        out.append(total)
    env.close()
    return out


def box_mapping(policy_json: dict, extras: dict) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) from policy.json's `box` action section when it has one, else from the adapter's spec."""
    stack = [policy_json]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("kind") == "box":
                if "scale" in node and "offset" in node:
                    return np.asarray(node["scale"]), np.asarray(node["offset"])
                low, high = np.asarray(node["low"]), np.asarray(node["high"])
                return (high - low) / 2, (high + low) / 2
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    low, high = np.asarray(extras["action_low"]), np.asarray(extras["action_high"])
    return (high - low) / 2, (high + low) / 2


def run_ours(steps: int, seed: int, learning_starts: int) -> dict:
    import onnxruntime as ort
    from s2r.policies.driver import Budget, new_run_spec, train
    from s2r.sim import make

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        spec = new_run_spec("sac", f"gym:{ENV_ID}", algo_overrides={"torch_threads": 1, "learning_starts": learning_starts,
                                                                     "eval_episodes": 0}, seed=seed, num_envs=1,
                            budget=Budget(steps=steps))
        t0 = time.perf_counter()
        res = train(spec, run, progress=False)
        wall = time.perf_counter() - t0
        sess = ort.InferenceSession(str(run / "policy.onnx"), providers=["CPUExecutionProvider"])
        scale, offset = box_mapping(json.loads((run / "policy.json").read_text()), make(f"gym:{ENV_ID}").spec.extras)
        name = sess.get_inputs()[0].name

        def act(obs: np.ndarray) -> np.ndarray:
            out = sess.run(None, {name: obs[None].astype(np.float32)})[0][0]
            return (offset + scale * out).astype(np.float32)

        returns = judge(act)
    return {"wall_s": wall, "train_loop_s": res["wall_time_s"], "updates": res.get("updates"), "returns": returns,
            "mean_return": float(np.mean(returns))}


def run_sb3(steps: int, seed: int, learning_starts: int) -> dict:
    import gymnasium as gym
    from stable_baselines3 import SAC

    env = gym.make(ENV_ID)
    model = SAC("MlpPolicy", env, seed=seed, learning_starts=learning_starts, batch_size=256, learning_rate=3e-4,
                buffer_size=1_000_000, tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, ent_coef="auto",
                verbose=0, device="cpu")
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - t0
    returns = judge(lambda obs: model.predict(obs, deterministic=True)[0])
    env.close()
    return {"wall_s": wall, "returns": returns, "mean_return": float(np.mean(returns))}


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--learning-starts", type=int, default=1_000)
    p.add_argument("--out", default="bench/results/gym_sac.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    rows = []
    for seed in args.seeds:
        for name, fn in (("s2r", run_ours), ("sb3", run_sb3)):
            torch.manual_seed(seed)
            r = {"impl": name, "seed": seed, **fn(args.steps, seed, args.learning_starts)}
            rows.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "returns"}), flush=True)
    summary = {impl: {"mean_return": float(np.mean([r["mean_return"] for r in rows if r["impl"] == impl])),
                      "mean_wall_s": float(np.mean([r["wall_s"] for r in rows if r["impl"] == impl]))}
               for impl in ("s2r", "sb3")}
    out = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "env": ENV_ID, "steps": args.steps,
           "seeds": args.seeds, "learning_starts": args.learning_starts, "eval": "10 deterministic episodes, seeds 1000-1009",
           "torch_threads": 1, "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "summary": summary,
           "runs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
