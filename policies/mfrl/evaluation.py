"""Held-out scoring of an exported planner against the heuristic and the optimiser, and its summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from s2r.policies.mfrl.sets import sample_sets
from s2r.real.metadata import MetadataError, load_metadata
from s2r.real.planner import Planner, PlannerConfig
from s2r.real.trajectory import feasibility, min_snap
from s2r.sim.config import from_dict
from s2r.sim.quadrotor.flight import FlightConfig, fly


def evaluate_planner(run_dir: str | Path, n_sets: int = 200, seed: int = 12345, *, fly_baselines: bool = True,
                     flight: FlightConfig | None = None, timing_repeats: int = 3) -> dict[str, Any]:
    """Score an exported planner on held-out waypoint sets against the heuristic and the optimiser.

    Every set is planned three ways: heuristic durations, `optimise_durations` (minimum time subject to
    the flatness check) and the planner as the robot runs it (`s2r.real.planner.Planner.plan`: ONNX,
    min-snap, stretched to feasibility). All plans are flown in the high-fidelity simulator (the planner's
    always; the baselines' when `fly_baselines`).

    Args:
        run_dir: Run folder with policy.onnx + policy.json.
        n_sets: Held-out waypoint sets.
        seed: Seed of the sets and flights (training used other seeds).
        fly_baselines: Also fly the heuristic and optimised plans.
        flight: Flight settings (default: the run's training settings when config.json has them).
        timing_repeats: Each set is planned this many times and its median time kept, so a preemption by
            another process does not pass for the planner's own latency.

    Returns:
        Means over sets of the total-time ratios, success and feasibility rates, re-planning latencies (ms,
        one thread: `onnx_ms` onnxruntime, `replan_ms` onnxruntime + min-snap, `replan_full_ms` the whole
        `Planner.plan` call), optimiser latencies and the evaluations the training used.
    """
    from s2r.sim.quadrotor.allocation import optimise_durations
    from s2r.sim.tasks.quadrotor import ReplanConfig

    run_dir = Path(run_dir)
    planner = Planner(run_dir, PlannerConfig(threads=1))
    ex = planner.meta.info  # training-side notes: the task config and the evaluations used
    task_cfg = from_dict(ReplanConfig, ex["task_cfg"])
    if flight is None:
        from s2r.policies.rundir import RunDir

        run = RunDir(run_dir)
        flight = FlightConfig()
        if run.exists():
            saved = run.read_config()
            train = saved.get("algo_cfg", saved.get("train", {}))
            if "flight" in train:
                flight = from_dict(FlightConfig, train["flight"])
    sets = sample_sets(task_cfg, n_sets, seed=seed)
    limits, dt = planner.limits, planner.dt
    # Timed pass first, on its own: the optimiser and the flights would otherwise leave caches cold and
    # garbage to collect inside the timed calls.
    for i in range(min(5, n_sets)):  # warm-up
        planner.plan(sets.set(i))
    rows: dict[str, list[float]] = {k: [] for k in ("t_heur", "t_opt", "t_pol", "replan_ms", "replan_full_ms", "onnx_ms",
                                                    "opt_ms", "raw_margin", "margin", "scale")}
    pol_splines, heur_splines, opt_splines = [], [], []
    for i in range(n_sets):
        w = sets.set(i)
        heur, planned = planner.durations(w)  # the network's timing before any repair
        planned = planned if np.isfinite(planned).all() else heur  # what plan() falls back to
        times = []
        for _ in range(timing_repeats):
            res = planner.plan(w)
            t0 = time.perf_counter()
            raw = min_snap(w, planned)
            times.append((res.infer_s, res.infer_s + time.perf_counter() - t0, res.total_s))
        onnx_s, replan_s, full_s = np.median(np.array(times), axis=0)
        rows["onnx_ms"].append(onnx_s * 1e3)
        rows["replan_ms"].append(replan_s * 1e3)
        rows["replan_full_ms"].append(full_s * 1e3)
        rows["margin"].append(res.margin)
        rows["scale"].append(res.scale)
        rows["t_heur"].append(float(heur.sum()))
        rows["t_pol"].append(res.total_time)
        pol_splines.append(res.spline)
        heur_splines.append(min_snap(w, heur))
        rows["raw_margin"].append(feasibility(raw, limits, dt).margin)
    for i in range(n_sets):
        w = sets.set(i)
        opt = optimise_durations(w, limits, init=sets.heuristic[i, : len(w) - 1], dt=dt)
        rows["opt_ms"].append(opt.wall_s * 1e3)
        rows["t_opt"].append(opt.total_time)
        opt_splines.append(min_snap(w, opt.durations))
    r = {k: np.asarray(v) for k, v in rows.items()}
    pol_ok = np.array([x.success for x in fly(pol_splines, flight, seed=seed)])
    out: dict[str, Any] = {
        "n_sets": n_sets,
        "seed": seed,
        "time_vs_heuristic": float(np.mean(r["t_pol"] / r["t_heur"])),
        "time_vs_optimised": float(np.mean(r["t_pol"] / r["t_opt"])),
        "optimised_vs_heuristic": float(np.mean(r["t_opt"] / r["t_heur"])),
        "high_fidelity_success": float(pol_ok.mean()),
        "low_fidelity_feasible_raw": float(np.mean(r["raw_margin"] >= 0)),
        "low_fidelity_feasible": float(np.mean(r["margin"] >= 0)),
        "safety_stretched": float(np.mean(r["scale"] > 1.0)),
        "replan_ms_p50": float(np.percentile(r["replan_ms"], 50)),
        "replan_ms_p99": float(np.percentile(r["replan_ms"], 99)),
        "replan_full_ms_p50": float(np.percentile(r["replan_full_ms"], 50)),
        "replan_full_ms_p99": float(np.percentile(r["replan_full_ms"], 99)),
        "onnx_ms_p50": float(np.percentile(r["onnx_ms"], 50)),
        "optimiser_ms_p50": float(np.percentile(r["opt_ms"], 50)),
        "optimiser_ms_p99": float(np.percentile(r["opt_ms"], 99)),
        "high_fidelity_evaluations": ex.get("high_fidelity_evaluations"),
        "low_fidelity_evaluations": ex.get("low_fidelity_evaluations"),
    }
    if fly_baselines:
        out["heuristic_high_fidelity_success"] = float(np.mean([x.success for x in fly(heur_splines, flight, seed=seed)]))
        out["optimised_high_fidelity_success"] = float(np.mean([x.success for x in fly(opt_splines, flight, seed=seed)]))
    return out


def is_planner_run(run_dir: str | Path) -> bool:
    """True when a run folder holds a waypoint planner export (policy.json with a planner section)."""
    try:
        return load_metadata(Path(run_dir) / "policy.json").planner is not None
    except MetadataError:
        return False


def summary_lines(result: dict[str, Any]) -> list[str]:
    """Human-readable lines of an `evaluate_planner` result (what `s2r eval` prints)."""
    r = result
    lines = [
        f"{r['n_sets']} held-out waypoint sets (seed {r['seed']})",
        f"  total time vs heuristic min-snap   {r['time_vs_heuristic']:.3f}   (optimiser: {r['optimised_vs_heuristic']:.3f})",
        f"  total time vs optimised min-snap   {r['time_vs_optimised']:.3f}",
        f"  high-fidelity success              {r['high_fidelity_success'] * 100:.1f} %",
        f"  low-fidelity feasible (raw/safe)   {r['low_fidelity_feasible_raw'] * 100:.1f} % / "
        f"{r['low_fidelity_feasible'] * 100:.1f} %",
        f"  re-planning p50/p99 (ONNX+min-snap) {r['replan_ms_p50']:.3f} / {r['replan_ms_p99']:.3f} ms"
        f"   optimiser p50 {r['optimiser_ms_p50']:.2f} ms",
        f"  flights used in training           {r['high_fidelity_evaluations']}",
    ]
    if "optimised_high_fidelity_success" in r:
        lines.insert(4, f"  high-fidelity success, baselines   heuristic {r['heuristic_high_fidelity_success'] * 100:.1f} %, "
                        f"optimised {r['optimised_high_fidelity_success'] * 100:.1f} %")
    return lines
