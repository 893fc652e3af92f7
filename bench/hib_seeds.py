"""Gather several seeds of bench/hib.py into mean ± spread per policy, in distribution and out of it.

    python bench/hib_seeds.py /tmp/h17/out_rma.json /tmp/h17/out_dagger.json ... --out bench/results/hib_3seeds

Each input is a bench/hib.py output whose student runs are named `<policy>_s<seed>` (`--variant _s<seed>
--seed <seed>`), all evaluated with the same `--eval-seed` and `--episodes`; "teacher" is one run (no seed).
Runs are grouped by the name before `_s<seed>`; per group, split and metric the JSON holds every seed's value,
the mean, the sample standard deviation over seeds and min/max. It also records each input's command lines,
load averages and every run's env steps and wall time, and states the issue's two goals from the means.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

METRICS = (("mean_return", "mean return"), ("mean_vel_error", "velocity error (m/s)"), ("fall_rate", "fall rate"))
SPLITS = (("in_distribution", "in distribution"), ("validation", "validation (selection) range"),
          ("out_of_distribution", "held-out dynamics"))
SEEDED = re.compile(r"^(?P<group>.+)_s(?P<seed>\d+)$")


def gather(inputs: list[dict]) -> tuple[dict, dict]:
    """(per-group statistics, per-run training facts) from bench/hib.py outputs."""
    runs: dict[str, dict[int, dict]] = {}
    train: dict[str, dict] = {}
    eval_cfg = set()
    for doc in inputs:
        eval_cfg.add((doc["config"]["episodes"], doc["config"]["eval_seed"]))
        for name, res in doc.get("eval", {}).items():
            m = SEEDED.match(name)
            group, seed = (m["group"], int(m["seed"])) if m else (name, -1)
            runs.setdefault(group, {})[seed] = res
        for name, t in doc.get("train", {}).items():
            train[name] = {k: t[k] for k in ("env_steps", "train_wall_s", "overrides")}
    if len(eval_cfg) > 1:
        raise SystemExit(f"bench/hib_seeds.py: the inputs were evaluated with different (episodes, eval seed) "
                         f"{sorted(eval_cfg)}; evaluate every run with the same --episodes and --eval-seed")
    stats: dict[str, dict] = {}
    for group, by_seed in runs.items():
        seeds = sorted(by_seed)
        g: dict[str, object] = {"seeds": seeds}
        for split, _ in SPLITS:
            g[split] = {}
            for key, _ in METRICS:
                vals = [by_seed[s][split][key] for s in seeds if split in by_seed[s]]
                if not vals:
                    continue
                a = np.asarray(vals, dtype=float)
                g[split][key] = {"values": vals, "mean": float(a.mean()),
                                 "std": float(a.std(ddof=1)) if len(a) > 1 else None,
                                 "min": float(a.min()), "max": float(a.max())}
        stats[group] = g
    return stats, train


def teacher_facts(inputs: list[dict]) -> dict[str, dict]:
    """Env steps and warm start of every teacher run the inputs name (a smoke-test teacher shows here)."""
    out: dict[str, dict] = {}
    for doc in inputs:
        where = Path(doc["config"].get("teacher") or Path(doc["config"]["run_root"]) / "teacher")
        if str(where) in out or not (where / "history.json").is_file():
            continue
        hist = json.loads((where / "history.json").read_text())
        algo = json.loads((where / "config.json").read_text()).get("algo_cfg", {})
        out[str(where)] = {"env_steps": hist[-1].get("progress"), "wall_s": hist[-1].get("wall_time"),
                           "init_from": algo.get("init_from")}
    return out


def goals(stats: dict, hib: str) -> dict:
    """The issue's goals on the seed means (`hib`: the group standing for HIB)."""
    def mean(group: str, split: str, key: str) -> float:
        return stats[group][split][key]["mean"]

    out: dict[str, object] = {"hib_group": hib}
    try:
        ratio = mean(hib, "in_distribution", "mean_return") / mean("teacher", "in_distribution", "mean_return")
        out["hib_over_teacher_return_in_distribution"] = ratio
        out["hib_within_10pct_of_teacher"] = bool(ratio >= 0.9)
    except KeyError:
        out["hib_within_10pct_of_teacher"] = None
    try:
        r = {g: mean(g, "out_of_distribution", "mean_return") for g in (hib, "rma", "dagger")}
        out["ood_mean_return"] = r
        out["hib_best_student_return_ood"] = bool(r[hib] > max(r["rma"], r["dagger"]))
        f = {g: mean(g, "out_of_distribution", "fall_rate") for g in (hib, "rma", "dagger")}
        out["ood_fall_rate"] = f
        out["hib_fewest_falls_ood"] = bool(f[hib] < min(f["rma"], f["dagger"]))
        e = {g: mean(g, "out_of_distribution", "mean_vel_error") for g in (hib, "rma", "dagger")}
        out["hib_best_student_vel_error_ood"] = bool(e[hib] < min(e["rma"], e["dagger"]))
    except KeyError:
        out["hib_best_student_return_ood"] = None
    return out


def plot(stats: dict, path: Path, title: str) -> None:
    """Bars of the seed means with min–max whiskers, in and out of distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = [g for g in ("teacher", "rma", "dagger", "hib") if g in stats]
    names = first + sorted(g for g in stats if g not in first)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    x = np.arange(len(names))
    for ax, (key, label) in zip(axes, METRICS, strict=True):
        shown = [(sp, lab) for sp, lab in SPLITS if any(stats[n].get(sp) for n in names)]
        width = 0.8 / len(shown)
        for k, (split, slabel) in enumerate(shown):
            cells = [stats[n].get(split, {}).get(key) for n in names]
            mean = np.array([c["mean"] if c else np.nan for c in cells])
            lo = np.array([c["mean"] - c["min"] if c else 0.0 for c in cells])
            hi = np.array([c["max"] - c["mean"] if c else 0.0 for c in cells])
            ax.bar(x + (k - (len(shown) - 1) / 2) * width, mean, width, yerr=[lo, hi], capsize=3, label=slabel)
        ax.set_xticks(x, [f"{n} ({len(stats[n]['seeds'])})" for n in names], rotation=30, ha="right", fontsize=8)
        ax.set_title(label)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="+", help="bench/hib.py output JSON files")
    p.add_argument("--hib", default="hib", help="the group standing for HIB in the goals")
    p.add_argument("--out", default="bench/results/hib_3seeds")
    args = p.parse_args()
    docs = [json.loads(Path(f).read_text()) for f in args.inputs]
    stats, train = gather(docs)
    out = Path(args.out)
    result = {
        "command": "python " + " ".join(sys.argv),
        "inputs": {f: {"commands": d.get("commands", []), "commit": d.get("commit"),
                       "load_average": d.get("load_average", {}), "eval_wall_s": d.get("eval_wall_s")}
                   for f, d in zip(args.inputs, docs, strict=True)},
        "ood": docs[0].get("ood"), "episodes": docs[0]["config"]["episodes"], "eval_seed": docs[0]["config"]["eval_seed"],
        "teacher_runs": teacher_facts(docs), "policies": stats, "train": train, "goals": goals(stats, args.hib),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot(stats, out.with_suffix(".png"), f"Go1-Velocity-Flat: teacher vs students, mean over seeds (count in brackets), "
                                         f"min–max whiskers, {result['episodes']} episodes each")
    print(json.dumps(result["goals"], indent=1))


if __name__ == "__main__":
    main()
