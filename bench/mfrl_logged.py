"""Logged flights standing in for real ones: a robot the simulator does not know, fed back through the log format.

    python bench/mfrl_logged.py runs/bench/mfrl-full-s0 --out bench/results/mfrl_logged

The "real" robot is the MuJoCo flight with a different mass, rotor drag and motor lag than training (--mass,
--drag, --lag; the controller still assumes the nominal vehicle). Plans of the trained planner (its own timing
and perturbations of it, as a flight campaign would fly) are flown on it and written in the real formats
(`plans.jsonl` + CSV `plan_id,t,x,y,z`, `s2r.policies.mfrl.flights`). Then, for 0, 10, 30 and 100 logs:
the run is resumed from its checkpoint, the logs are read back from disk (`MFRL.import_flights`, exactly what
`s2r train --resume RUN --flights DIR` does) and the estimator refitted; its error is measured on held-out
flights of that robot (mean absolute error of the predicted score at the fidelity the policy reads, and how
often its "flyable" call (LCB > 0) matches the flight's success). Last, the planner's success on that robot on
--sets held-out sets (through the robot-side `Planner.plan`, stretch included), before and after --rounds
more training rounds with the 100 logs. Prints one JSON line; writes <out>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from s2r.policies.driver import Budget, RunDriver, resume_run_spec
from s2r.policies.mfrl.estimator import HIGH
from s2r.policies.mfrl.flights import LoggedPlan, write_flight_csv, write_plans
from s2r.policies.mfrl.sets import high_fidelity_score, sample_sets
from s2r.real.planner import Planner, PlannerConfig, durations_from_actions
from s2r.real.trajectory import min_snap
from s2r.sim.quadrotor.flight import FlightConfig, fly


def _plans(runner: object, n: int, seed: int, perturb: float, id0: int) -> list[LoggedPlan]:
    """The policy's plans for n fresh sets; every other one perturbed by N(0, perturb) in log-ratio space."""
    sets = sample_sets(runner.task_cfg, n, seed=seed)
    a = runner.act(sets).numpy()
    noise = np.random.default_rng(seed).normal(0.0, perturb, a.shape) * (np.arange(n) % 2 == 1)[:, None]
    d = durations_from_actions(np.clip(a + noise, -1, 1), sets.heuristic, runner.task_cfg.max_ratio)
    return [LoggedPlan(plan_id=id0 + i, waypoints=sets.set(i), durations=d[i, : sets.counts[i] - 1]) for i in range(n)]


def _fly(plans: list[LoggedPlan], robot: FlightConfig, seed: int) -> tuple[list, list]:
    logs: list[tuple[np.ndarray, np.ndarray]] = []
    res = fly([min_snap(p.waypoints, p.durations) for p in plans], robot, seed=seed, logs=logs)
    return res, logs


def _resume(run: Path, work: Path, name: str, rounds: int | None = None) -> RunDriver:
    copy = work / name
    shutil.copytree(run, copy)
    spec = resume_run_spec(copy, budget=Budget(steps=rounds) if rounds else None)
    return RunDriver(spec, copy, resume=True, progress=False)


def _success(policy_dir: Path, robot: FlightConfig, task_cfg: object, n: int, seed: int) -> dict[str, float]:
    """Planner.plan on n held-out sets, flown on `robot`: success rate, flyable-plan rate, mean time ratio."""
    planner = Planner(policy_dir, PlannerConfig(threads=1))
    sets = sample_sets(task_cfg, n, seed=seed)
    res = [planner.plan(sets.set(i)) for i in range(n)]
    flown = fly([r.spline for r in res], robot, seed=seed)
    ok = np.array([r.feasible and f.success for r, f in zip(res, flown, strict=True)])
    ratio = np.array([r.total_time / sets.heuristic[i].sum() for i, r in enumerate(res)])
    return {"success": float(ok.mean()), "time_vs_heuristic": float(ratio.mean()),
            "stretched": float(np.mean([r.stretched for r in res]))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="trained mfrl run folder (checkpoint.pt, config.json, policy.onnx)")
    p.add_argument("--mass", type=float, default=1.2, help="true mass / nominal")
    p.add_argument("--drag", type=float, default=2.5, help="rotor drag / nominal")
    p.add_argument("--lag", type=float, default=0.06, help="s, motor time constant (training: 0.03)")
    p.add_argument("--logs", default="10,30,100")
    p.add_argument("--test", type=int, default=120, help="held-out flights for the estimator's error")
    p.add_argument("--sets", type=int, default=200, help="held-out sets for the planner's success")
    p.add_argument("--rounds", type=int, default=4, help="training rounds after adding the logs")
    p.add_argument("--perturb", type=float, default=0.3)
    p.add_argument("--out", default="bench/results/mfrl_logged")
    args = p.parse_args()
    torch.set_num_threads(1)
    t_start, load_before = time.perf_counter(), os.getloadavg()
    run = Path(args.run)
    counts = [int(x) for x in args.logs.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = _resume(run, work, "base")
        runner = base.algo
        robot = replace(runner.cfg.flight, mass_range=(args.mass, args.mass), drag_range=(args.drag, args.drag),
                        motor_time_constant=args.lag)
        # The flight campaign: logs in the real format, written once; each count reads the first N back.
        train_plans = _plans(runner, max(counts), seed=777_001, perturb=args.perturb, id0=10**18)
        train_res, train_logs = _fly(train_plans, robot, seed=1)
        test_plans = _plans(runner, args.test, seed=777_002, perturb=args.perturb, id0=2 * 10**18)
        test_res, _ = _fly(test_plans, robot, seed=2)
        bound = runner.cfg.flight.tracking_bound
        y_test = np.array([high_fidelity_score(r, bound) for r in test_res])
        ok_test = np.array([r.success for r in test_res])
        sim_res = fly([min_snap(q.waypoints, q.durations) for q in test_plans], runner.cfg.flight, seed=2)
        base.close()
        rows = []
        for n in [0, *counts]:
            folder = work / f"logs_{n}"
            folder.mkdir()
            if n:
                write_plans(folder / "plans.jsonl", train_plans[:n])
                write_flight_csv(folder / "flights.csv", [(q.plan_id, t, x) for q, (t, x) in
                                                          zip(train_plans[:n], train_logs[:n], strict=True)])
            driver = _resume(run, work, f"est_{n}")
            r = driver.algo
            report = r.import_flights(folder) if n else {"used": 0, "skipped": [], "real_minus_sim": None}
            r.estimator.fit()
            feats = r._logged_features([q.waypoints for q in test_plans], [q.durations for q in test_plans], test_res)
            with torch.no_grad():
                mean, std = r.estimator.predict(feats, r.target_fidelity())
                sim_mean = r.estimator.predict(feats, HIGH)[0]
            lcb_ok = (mean - r.cfg.estimator.kappa * std).numpy() > 0
            rows.append({"logs": n, "used": report["used"], "skipped": len(report["skipped"]),
                         "target_fidelity": r.target_fidelity(),
                         "mae": float(np.abs(mean.numpy() - y_test).mean()),
                         "mae_sim_prediction": float(np.abs(sim_mean.numpy() - y_test).mean()),
                         "flyable_call_accuracy": float((lcb_ok == ok_test).mean()),
                         "real_minus_sim_on_added": report["real_minus_sim"]})
            driver.close()
        before = _success(run, robot, runner.task_cfg, args.sets, seed=40_000)
        before_sim = _success(run, runner.cfg.flight, runner.task_cfg, args.sets, seed=40_000)
        after_run = work / "after"
        done = json.loads((run / "history.json").read_text())[-1]["progress"]
        driver = _resume(run, work, "after", rounds=int(done) + args.rounds)
        driver.algo.import_flights(work / f"logs_{max(counts)}")
        driver.learn()
        driver.close()
        after = _success(after_run, robot, runner.task_cfg, args.sets, seed=40_000)
        after_sim = _success(after_run, runner.cfg.flight, runner.task_cfg, args.sets, seed=40_000)
    result = {
        "bench": "mfrl_logged",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "robot": {"mass_scale": args.mass, "drag_scale": args.drag, "motor_time_constant": args.lag},
        "campaign_success_real": float(np.mean([r.success for r in train_res])),
        "test_flights": args.test, "test_success_real": float(ok_test.mean()),
        "test_success_sim": float(np.mean([r.success for r in sim_res])),
        "estimator": rows,
        "planner_before": {"real_robot": before, "sim": before_sim},
        "planner_after": {"real_robot": after, "sim": after_sim, "extra_rounds": args.rounds, "logs": max(counts)},
        "minutes": round((time.perf_counter() - t_start) / 60, 2),
        "loadavg_before_after": [round(x, 2) for x in (*load_before, *os.getloadavg())],
        "cpu_count": os.cpu_count(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
