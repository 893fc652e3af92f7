"""Updates/s of the off-policy learner (10-critic LayerNorm ensemble) against Stable-Baselines3 SAC.

    python bench/learner_throughput.py            # about 5 minutes on 2 cores (includes a torch.compile)
    python bench/learner_throughput.py --quick    # about 1.5 minutes
    python bench/learner_throughput.py --residual --out bench/results/learner_throughput_residual.json

Everyone gets the same problem: observation dim 40, action dim 4, batch 256, hidden (256, 256), replay
buffers pre-filled with random transitions, so only the learner is timed.

- `ours`: `OffPolicyLearner.update_from` (sampling included) with 10 critics, target = min over 2, for the
  deterministic actor with TD3's policy delay of 2 and the stochastic (SAC-style) actor, updated every step
  like SB3's SAC.
- `sb3_sac`: `model.train(gradient_steps=N, batch_size=256)` of SB3 SAC (net_arch [256, 256], 2 critics,
  no LayerNorm) on a gymnasium env with the same Box spaces, its replay buffer pre-filled.
- critic-updates/s = updates/s x critics per update (10 for ours, 2 for SB3); `ratio_critic_updates` is
  ours (best thread count) / SB3 (best thread count), per actor kind. The goal is >= 2.
- `gemm_gflops`: a plain float32 GEMM of the learner's sizes in the same run, as the machine's matmul rate
  (the batched (10, 256, 256) x (10, 256, 256) of the ensemble's hidden layer, and a single 256^3 one);
  `flops_per_update` counts the learner's matmul FLOPs analytically (forward, backward, target), and
  `fraction_of_gemm` = achieved matmul GFLOP/s / the batched GEMM rate.
- `malloc`: glibc returns large freed blocks to the OS by default, so every big tensor of every update is
  page-faulted in again. Measured both ways: `default` first, then `kept` after
  `s2r.policies.offpolicy.keep_freed_memory()` (which the learner calls by default), SB3 in the same
  conditions each time.
- `compile`: the stochastic learner with `compile=True` (torch.compile of the losses): compile time, and
  updates/s against eager and SB3 timed again together (outside --quick only; malloc kept).

`--residual` times the residual RL learner instead, exactly as `ResidualConfig` builds it (issue 13): lift's
groups (policy 14, privileged 13, base action 4; action 4), 10 LayerNorm critics, TD3-style actor every 4th
update, n-step 3, half of each batch from a demo buffer, the residual compose; eager against `compile=True`
(compile time with the cache as found). It reports updates per wall second and per CPU second of the timing
thread (`time.thread_time`): on a shared machine the CPU rate is the one that stays comparable between runs.

Timings on a shared machine are noisy: configurations are timed interleaved in equal windows and the
medians are reported, with `load_avg_1min` before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from itertools import pairwise

import gymnasium as gym
import numpy as np
import torch
from s2r.policies.offpolicy import OffPolicyConfig, OffPolicyLearner, keep_freed_memory
from s2r.policies.replay import ReplayBuffer

OBS, ACT, BATCH, HIDDEN, CRITICS, SUBSET = 40, 4, 256, (256, 256), 10, 2
FILL = 20_000


class _BoxEnv(gym.Env):
    """Random observations in a Box of the benchmark's dims: only its spaces matter to SB3's train()."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (ACT,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        return self.observation_space.sample(), 0.0, False, False, {}


def _data(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {"obs": rng.normal(size=(n, OBS)).astype(np.float32), "next_obs": rng.normal(size=(n, OBS)).astype(np.float32),
            "action": rng.uniform(-1, 1, (n, ACT)).astype(np.float32), "reward": rng.normal(size=n).astype(np.float32),
            "terminated": rng.random(n) < 0.01, "truncated": rng.random(n) < 0.01}


def make_sb3() -> Callable[[int], None]:
    """SB3 SAC with a filled buffer; returns train(n) running n gradient steps."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.logger import configure

    model = SAC("MlpPolicy", _BoxEnv(), buffer_size=FILL, batch_size=BATCH, learning_starts=0,
                policy_kwargs={"net_arch": list(HIDDEN)}, device="cpu", seed=0)
    model.set_logger(configure(None, []))
    d = _data(np.random.default_rng(0), FILL)
    for i in range(FILL):
        model.replay_buffer.add(d["obs"][i:i + 1], d["next_obs"][i:i + 1], d["action"][i:i + 1], d["reward"][i:i + 1],
                                d["terminated"][i:i + 1], [{}])
    return lambda n: model.train(gradient_steps=n, batch_size=BATCH)


def make_ours(cfg: OffPolicyConfig) -> tuple[Callable[[int], None], OffPolicyLearner]:
    """Our learner with a filled buffer; returns (train(n) running n sampled updates, learner)."""
    torch.manual_seed(0)
    learner = OffPolicyLearner({"policy": OBS}, ACT, cfg)
    buf = ReplayBuffer({"policy": OBS}, ACT, FILL, num_envs=16)
    d = _data(np.random.default_rng(0), FILL)
    for i in range(0, FILL, 16):
        s = slice(i, i + 16)
        buf.add({"policy": d["obs"][s]}, d["action"][s], d["reward"][s], {"policy": d["next_obs"][s]},
                d["terminated"][s], d["truncated"][s])
    gen = torch.Generator().manual_seed(0)
    return (lambda n: learner.update_from(buf, num_updates=n, generator=gen)), learner


def _rate(train: Callable[[int], None], seconds: float, chunk: int = 10) -> float:
    """Updates/s of train(chunk) repeated for about `seconds`."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        train(chunk)
        n += chunk
    return n / (time.perf_counter() - t0)


def measure(configs: dict[str, Callable[[int], None]], threads: tuple[int, ...], rounds: int,
            seconds: float) -> dict[str, dict[int, float]]:
    """Median updates/s per configuration and thread count, timed interleaved."""
    runs: dict[tuple[str, int], list[float]] = {}
    for train in configs.values():
        train(5)  # warm-up
    for _ in range(rounds):
        for nt in threads:
            torch.set_num_threads(nt)
            for name, train in configs.items():
                runs.setdefault((name, nt), []).append(_rate(train, seconds))
    out: dict[str, dict[int, float]] = {}
    for (name, nt), rates in runs.items():
        out.setdefault(name, {})[nt] = round(statistics.median(rates), 1)
    return out


def make_gemms() -> dict[str, tuple[Callable[[int], None], int]]:
    """Plain float32 GEMMs of the learner's shapes: name -> (run(n) doing n GEMMs, FLOPs per GEMM)."""
    out = {}
    for name, a, b in (("gemm_batched_10x256x256x256", torch.randn(CRITICS, BATCH, 256), torch.randn(CRITICS, 256, 256)),
                       ("gemm_single_256x256x256", torch.randn(BATCH, 256), torch.randn(256, 256))):

        def run(n: int, a: torch.Tensor = a, b: torch.Tensor = b) -> None:
            for _ in range(n):
                torch.matmul(a, b)

        out[name] = (run, 2 * a.numel() * b.shape[-1])
    return out


def flops_per_update(cfg: OffPolicyConfig, actor_in: int = OBS, critic_in: int = OBS) -> int:
    """Matmul FLOPs of one update (elementwise work not counted): target, critic step, actor step."""
    b, e, s = cfg.batch_size, cfg.num_critics, cfg.critic_subset
    out_a = 2 * ACT if cfg.actor == "stochastic" else ACT
    a_dims = [actor_in, *cfg.actor_hidden, out_a]
    c_dims = [critic_in + ACT, *cfg.critic_hidden, 1]
    a_layers = [i * o for i, o in pairwise(a_dims)]
    c_layers = [i * o for i, o in pairwise(c_dims)]
    fwd_a, fwd_c = 2 * b * sum(a_layers), 2 * b * sum(c_layers)
    target = fwd_a + s * fwd_c
    # Critic backward: weight grads for every layer, input grads for all but the first (its input is data).
    critic = e * fwd_c + e * fwd_c + e * (fwd_c - 2 * b * c_layers[0])
    # Actor step: actor forward + backward (no input grad for its first layer), critic forward + input grads.
    actor = 3 * fwd_a - 2 * b * a_layers[0] + 2 * e * fwd_c
    return int(target + critic + actor / cfg.policy_delay)


RESIDUAL_DIMS = {"policy": 14, "privileged": 13, "base_action": ACT}  # Panda-Lift-Cube's groups + the base action


def make_residual(compile_: bool) -> Callable[[int], None]:
    """The residual learner of `ResidualConfig` on filled online (8 envs) and demo buffers; train(n) = n updates.

    The critic warm-up is skipped so every 4th update steps the actor, as in the run after its first 10k steps.
    """
    from s2r.policies.offpolicy import residual_compose
    from s2r.policies.residual import ResidualConfig

    res = ResidualConfig()
    cfg = replace(res.learner, critic_warmup_updates=0, compile=compile_)
    rng = np.random.default_rng(0)

    def filled(n: int, num_envs: int) -> ReplayBuffer:
        buf = ReplayBuffer(RESIDUAL_DIMS, ACT, n, num_envs=num_envs)
        for _ in range(0, n, num_envs):
            obs, nxt = ({g: rng.normal(size=(num_envs, d)).astype(np.float32) for g, d in RESIDUAL_DIMS.items()}
                        for _ in range(2))
            buf.add(obs, rng.uniform(-1, 1, (num_envs, ACT)).astype(np.float32),
                    (rng.random(num_envs) < 0.05).astype(np.float32), nxt, rng.random(num_envs) < 0.01,
                    rng.random(num_envs) < 0.02)
        return buf

    online, demo = filled(20_000, 8), filled(2_000, 1)
    stats = {g: (np.zeros(d), np.ones(d)) for g, d in RESIDUAL_DIMS.items() if g != "base_action"}
    torch.manual_seed(0)
    learner = OffPolicyLearner(RESIDUAL_DIMS, ACT, cfg, compose=residual_compose(res.scale), obs_stats=stats)
    gen = torch.Generator().manual_seed(0)
    return lambda n: learner.update_from(online, demo, n, gen)


def residual_main(rounds: int, updates: int, compile_: bool) -> dict:
    """Updates/s (wall and CPU) of the residual learner, eager vs compiled, timed interleaved at 1 thread."""
    from s2r.policies.residual import ResidualConfig

    torch.set_num_threads(1)
    load_before = os.getloadavg()
    configs = {"eager": make_residual(False)}
    compile_s = None
    if compile_:
        t0 = time.perf_counter()
        configs["compiled"] = make_residual(True)
        configs["compiled"](8)  # compiles the critic loss, then (first actor update) the actor loss
        compile_s = round(time.perf_counter() - t0, 1)
    for train in configs.values():
        train(8)
    wall: dict[str, list[float]] = {k: [] for k in configs}
    cpu: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(rounds):
        for name, train in configs.items():
            t0, c0 = time.perf_counter(), time.thread_time()
            train(updates)
            wall[name].append(updates / (time.perf_counter() - t0))
            cpu[name].append(updates / (time.thread_time() - c0))
    gemm_run, gemm_flops = make_gemms()["gemm_batched_10x256x256x256"]
    c0 = time.thread_time()
    gemm_run(50)
    gemm_cpu_gflops = 50 * gemm_flops / (time.thread_time() - c0) / 1e9
    cfg = ResidualConfig().learner
    flops = flops_per_update(cfg, actor_in=sum(RESIDUAL_DIMS[g] for g in cfg.actor_obs),
                             critic_in=sum(RESIDUAL_DIMS[g] for g in cfg.critic_obs))
    med = {k: round(statistics.median(v), 2) for k, v in cpu.items()}
    return {"bench": "learner_throughput_residual", "command": " ".join(sys.argv), "threads": 1, "rounds": rounds,
            "updates_per_window": updates,
            "groups": RESIDUAL_DIMS, "torch": torch.__version__, "compile_s": compile_s,
            "updates_per_wall_s": {k: round(statistics.median(v), 2) for k, v in wall.items()},
            "updates_per_cpu_s": med, "updates_per_cpu_s_all": {k: [round(x, 2) for x in v] for k, v in cpu.items()},
            "flops_per_update": flops, "gemm_gflops_per_cpu_s": round(gemm_cpu_gflops, 1),
            "fraction_of_gemm": {k: round(r * flops / 1e9 / gemm_cpu_gflops, 3) for k, r in med.items()},
            "load_avg_before_after": [[round(x, 2) for x in load_before], [round(x, 2) for x in os.getloadavg()]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing windows, no torch.compile run")
    parser.add_argument("--residual", action="store_true", help="time the residual RL learner (see the docstring)")
    parser.add_argument("--rounds", type=int, default=8, help="--residual: interleaved timing windows per variant")
    parser.add_argument("--updates", type=int, default=40, help="--residual: updates per timing window")
    parser.add_argument("--no-compile", action="store_true", help="--residual: eager only")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.residual:
        keep_freed_memory()  # as the learner does by default on the CPU
        result = residual_main(args.rounds, args.updates, not args.no_compile)
        print(json.dumps(result))
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)
        return
    seconds, rounds = (1.0, 2) if args.quick else (3.0, 3)
    threads = (1, 2) if os.cpu_count() and os.cpu_count() >= 2 else (1,)
    load_before = os.getloadavg()[0]
    base = OffPolicyConfig(num_critics=CRITICS, critic_subset=SUBSET, batch_size=BATCH, actor_hidden=HIDDEN,
                           critic_hidden=HIDDEN, keep_freed_memory=False)
    # Each actor kind with its own recipe: TD3 updates the actor every second update, SAC every update.
    cfgs = {"deterministic": replace(base, actor="deterministic", policy_delay=2), "stochastic": base}

    result: dict = {"bench": "learner_throughput", "quick": args.quick, "obs_dim": OBS, "action_dim": ACT,
                    "batch": BATCH, "hidden": list(HIDDEN), "critics": CRITICS, "critic_subset": SUBSET,
                    "torch": torch.__version__, "cpu_count": os.cpu_count(), "malloc": {}}
    gemms = make_gemms()
    for malloc in ("default", "kept"):
        if malloc == "kept":
            keep_freed_memory()
        configs = {"sb3_sac": make_sb3()}
        configs.update({f"ours_{k}": make_ours(c)[0] for k, c in cfgs.items()})
        # The GEMMs are timed in the same interleaved rounds, so they see the same background load.
        configs.update({k: run for k, (run, _) in gemms.items()})
        rates = measure(configs, threads, rounds, seconds)
        gemm = {k: {nt: round(r * gemms[k][1] / 1e9, 1) for nt, r in rates.pop(k).items()} for k in gemms}
        best_nt = {k: max(v, key=v.get) for k, v in rates.items()}
        best = {k: rates[k][nt] for k, nt in best_nt.items()}
        entry = {"updates_per_s": {k: {str(nt): r for nt, r in v.items()} for k, v in rates.items()},
                 "critic_updates_per_s": {k: round(best[k] * (2 if k == "sb3_sac" else CRITICS), 1) for k in best},
                 "gemm_gflops": {k: {str(nt): g for nt, g in v.items()} for k, v in gemm.items()}}
        for kind in cfgs:
            entry[f"ratio_critic_updates_{kind}"] = round(entry["critic_updates_per_s"][f"ours_{kind}"]
                                                         / entry["critic_updates_per_s"]["sb3_sac"], 2)
        # Achieved matmul GFLOP/s over the batched GEMM's rate at the same thread count.
        entry["fraction_of_gemm"] = {
            k: round(best[f"ours_{k}"] * flops_per_update(c) / 1e9 / gemm["gemm_batched_10x256x256x256"][best_nt[f"ours_{k}"]], 3)
            for k, c in cfgs.items()}
        result["malloc"][malloc] = entry
    result["flops_per_update"] = {k: flops_per_update(c) for k, c in cfgs.items()}

    if not args.quick:
        torch.set_num_threads(max(threads))
        t0 = time.perf_counter()
        train, learner = make_ours(replace(cfgs["stochastic"], compile=True))
        train(3)  # compiles
        compile_s = time.perf_counter() - t0
        configs = {"sb3_sac": make_sb3(), "ours_stochastic_eager": make_ours(cfgs["stochastic"])[0],
                   "ours_stochastic_compiled": train}
        rates = measure(configs, threads, rounds, seconds)
        best = {k: max(v.values()) for k, v in rates.items()}
        result["compile"] = {"compile_s": round(compile_s, 1), "compiled_active": learner.compiled,
                             "updates_per_s": {k: {str(nt): r for nt, r in v.items()} for k, v in rates.items()},
                             "ratio_critic_updates_compiled": round(best["ours_stochastic_compiled"] * CRITICS
                                                                    / (best["sb3_sac"] * 2), 2)}
    result["load_avg_1min_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
