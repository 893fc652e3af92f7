"""HIL-SERL in simulation: success and intervention rate against env steps, against RLPD and HG-DAgger.

Every method is the `hil` algorithm with the same demos (collected by the task's scripted expert with the
run's seed), learner and budget; only the operator and the loss differ:

- `hil`: the simulated operator takes over when the policy strays; RL + the behaviour-cloning step (default).
- `hilserl`: the same without the behaviour-cloning step (HIL-SERL as published).
- `rlpd`: no operator (RLPD with the demos; same BC step on the demos).
- `dagger`: the operator takes over, no RL: behaviour cloning on demos + corrections (HG-DAgger).

Each run is an `s2r train` subprocess at one torch thread, `--parallel` at a time; success is the
deterministic policy alone (no operator) on `--eval-episodes` episodes, every `--steps / --evals` steps.

    python bench/hil.py --task Panda-PickPlace-Cube --steps 15000 --seeds 0 1 2 --out bench/results/hil_pickplace
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

METHODS = {"hil": [], "hilserl": ["bc_weight=0.0"], "rlpd": ["operator=false"], "dagger": ["rl=false"]}


def run_one(task: str, method: str, seed: int, steps: int, evals: int, eval_episodes: int, work: Path,
            extra: list[str]) -> subprocess.Popen:
    run = work / f"{method}_s{seed}"
    args = [sys.executable, "-m", "s2r.policies.cli", "train", task, "--algo", "hil", "--steps", str(steps),
            "--seed", str(seed), "--run-dir", str(run), "--no-progress"]
    for kv in ["torch_threads=1", f"eval_every={max(1, steps // evals)}", f"eval_episodes={eval_episodes}",
               *METHODS[method], *extra]:
        args += ["--train-set", kv]
    log = open(work / f"{method}_s{seed}.log", "w")  # noqa: SIM115 - closed when the process is reaped
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    p.run_dir, p.log, p.t0 = run, log, time.monotonic()  # type: ignore[attr-defined]
    return p


def run_pool(jobs: list, parallel: int, loads: list[float]):
    """Start `jobs` ((key, start) pairs; start() -> a `run_one` process), at most `parallel` at a time, sampling
    the load average into `loads`; yield (key, process) for each run that ends well (failures are printed)."""
    queue, running = list(jobs), []
    while queue or running:
        while queue and len(running) < parallel:
            key, start = queue.pop(0)
            p = start()
            p.key = key
            running.append(p)
        time.sleep(2.0)
        loads.append(os.getloadavg()[0])
        for p in [p for p in running if p.poll() is not None]:
            running.remove(p)
            p.log.close()
            if p.returncode != 0:
                print(f"{p.key[0]} seed {p.key[1]} failed (rc {p.returncode}); see {p.run_dir}.log", file=sys.stderr)
                continue
            yield p.key, p


def curves(run: Path) -> dict:
    rows = json.loads((run / "history.json").read_text())
    rows = rows if isinstance(rows, list) else rows.get("rows", [])
    evals = [(int(r["progress"]), float(r["success_rate"])) for r in rows if "success_rate" in r]
    interv = [(int(r["progress"]), float(r["intervention_rate"])) for r in rows if "intervention_rate" in r]
    return {"eval": evals, "intervention": interv}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="Panda-PickPlace-Cube")
    ap.add_argument("--steps", type=int, default=15_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", default="hil,rlpd,dagger")
    ap.add_argument("--evals", type=int, default=6, help="evaluations per run (besides the one at step 0)")
    ap.add_argument("--eval-episodes", type=int, default=100)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VAL", help="extra hil setting for every run")
    ap.add_argument("--work", default="/tmp/bench_hil")
    ap.add_argument("--out", default="bench/results/hil")
    args = ap.parse_args()
    work = Path(args.work) / args.task
    work.mkdir(parents=True, exist_ok=True)
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    jobs = [((m, s), lambda m=m, s=s: run_one(args.task, m, s, args.steps, args.evals, args.eval_episodes, work,
                                               args.set)) for s in args.seeds for m in methods]
    results: dict[str, dict[int, dict]] = {m: {} for m in methods}
    loads, t_start = [os.getloadavg()[0]], time.monotonic()
    for (m, s), p in run_pool(jobs, args.parallel, loads):
        results[m][s] = {**curves(p.run_dir), "wall_s": time.monotonic() - p.t0}
        last = results[m][s]["eval"][-1]
        print(f"{m} seed {s}: success {last[1]:.2f} at {last[0]} steps ({results[m][s]['wall_s']:.0f} s)", flush=True)
    summary = {}
    for m, per_seed in results.items():
        if not per_seed:
            continue
        steps = sorted({st for r in per_seed.values() for st, _ in r["eval"]})
        table = {st: [dict(r["eval"]).get(st) for r in per_seed.values()] for st in steps}
        final = [r["eval"][-1][1] for r in per_seed.values()]
        reach = [next((st for st, v in r["eval"] if v >= 0.95), None) for r in per_seed.values()]
        last_interv = [r["intervention"][-1][1] for r in per_seed.values() if r["intervention"]]
        summary[m] = {"final_success_mean": float(np.mean(final)), "final_success_per_seed": final,
                      "final_success_spread": [float(np.min(final)), float(np.max(final))],
                      "steps_to_95": reach, "final_intervention_rate": last_interv,
                      "curve": {str(st): v for st, v in table.items()},
                      "wall_s": [r["wall_s"] for r in per_seed.values()]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    doc = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "commit": commit, "task": args.task,
           "steps": args.steps, "seeds": args.seeds, "eval_episodes": args.eval_episodes,
           "load_mean": float(np.mean(loads)), "load_max": float(np.max(loads)), "cpus": os.cpu_count(),
           "wall_s": time.monotonic() - t_start, "summary": summary, "runs": {m: {str(s): r for s, r in v.items()}
                                                                             for m, v in results.items()}}
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    plot(doc, out.with_suffix(".png"))
    print(json.dumps({m: {k: v for k, v in s.items() if k != "curve"} for m, s in summary.items()}, indent=1))


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for k, (m, per_seed) in enumerate(doc["runs"].items()):
        color = f"C{k}"
        for i, r in enumerate(per_seed.values()):
            xs, ys = zip(*r["eval"], strict=True)
            a1.plot(xs, ys, color=color, alpha=0.8, label=m if i == 0 else None)
            if r["intervention"]:
                xs, ys = zip(*r["intervention"], strict=True)
                a2.plot(xs, ys, color=color, alpha=0.8, label=m if i == 0 else None)
    a1.set(xlabel="env steps", ylabel="success (policy alone, 100 episodes)", title=doc["task"], ylim=(-0.02, 1.02))
    a2.set(xlabel="env steps", ylabel="intervention rate (training)", title="operator takeovers")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
