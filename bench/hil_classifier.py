"""HIL-SERL with a learned reward classifier as the only reward, against the same run rewarded by the simulator.

1. Label episodes of the task's scripted expert (failing on purpose half the time) by the simulator's success:
   `s2r hil label <task> --no-image --after-success 10` (state frames, a state classifier: the cheap variant; each
   episode runs 10 frames past its first success, so the labels show where success begins and ends).
2. Train and export the classifier: `s2r hil classifier labels.npz --inputs state` (threshold picked for a
   target false-positive rate on held-out failure episodes; precision/recall/FPR on test episodes are kept).
3. Train `hil` twice per seed, same demos, learner, operator and budget: `true` (reward = the simulator's
   success, which ends the episode) and `classifier` (`classifier=<onnx>`: the classifier's call is the only
   reward and ends the episode; the simulator's success ends nothing and only counts the classifier's false
   positives). Success is always the deterministic policy alone judged by the simulator.

Each run is an `s2r train` subprocess at one torch thread, `--parallel` at a time (bench/hil.py's runner).
Afterwards the classifier is also run over every frame the `true` runs collected (policy + operator, labelled
by the simulator): its false-positive rate under the HIL state distribution, against the expert-label test
split, and how many of those episodes a false positive would have ended (`--reanalyse` redoes only this).

    python bench/hil_classifier.py --steps 4000 --seeds 0 1 --out bench/results/hil_classifier_pickplace
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hil import curves, run_one, run_pool  # bench/hil.py: the same runner and history reader

COUNTS = ("episodes_ended", "classifier_ends", "false_positive_ends", "missed_successes", "train_success")


def s2r(*args: str, log: Path) -> float:
    """Run one `s2r` command (one torch thread), log its output, return its wall time; raise if it fails."""
    t0 = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, "-m", "s2r.policies.cli", *args], stdout=f, stderr=subprocess.STDOUT,
                            env=env).returncode
    if rc:
        raise SystemExit(f"`s2r {' '.join(args)}` failed (rc {rc}); see {log}")
    return time.monotonic() - t0


def counters(run: Path) -> list[dict]:
    """Classifier counters per logged row (progress, cumulative counts, training success window)."""
    rows = json.loads((run / "history.json").read_text())
    rows = rows if isinstance(rows, list) else rows.get("rows", [])
    return [{"progress": int(r["progress"]), **{k: float(r[k]) for k in COUNTS if k in r}}
            for r in rows if "episodes_ended" in r]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="Panda-PickPlace-Cube")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--evals", type=int, default=4)
    ap.add_argument("--eval-episodes", type=int, default=100)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--label-episodes", type=int, default=200)
    ap.add_argument("--classifier-steps", type=int, default=1000)
    ap.add_argument("--after-success", type=int, default=10)
    ap.add_argument("--target-fpr", type=float, default=0.02)
    ap.add_argument("--classifier", help="use this exported classifier instead of labelling and training one")
    ap.add_argument("--arms", default="true,classifier")
    ap.add_argument("--work", default="/tmp/bench_hil_classifier")
    ap.add_argument("--out", default="bench/results/hil_classifier_pickplace")
    ap.add_argument("--reanalyse", action="store_true", help="only redo the classifier-on-true-run-frames check")
    args = ap.parse_args()
    work = Path(args.work) / args.task
    if args.reanalyse:
        path = Path(args.out).with_suffix(".json")
        doc = json.loads(path.read_text())
        doc["classifier_on_true_runs"] = on_true_runs(work, Path(args.classifier) if args.classifier else work / "clf.onnx",
                                                      args.task)
        path.write_text(json.dumps(doc, indent=1))
        print(json.dumps(doc["classifier_on_true_runs"], indent=1))
        return
    work.mkdir(parents=True, exist_ok=True)
    t_start, loads = time.monotonic(), [os.getloadavg()[0]]
    doc: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "task": args.task, "steps": args.steps,
                 "seeds": args.seeds, "eval_episodes": args.eval_episodes, "cpus": os.cpu_count()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clf = Path(args.classifier) if args.classifier else work / "clf.onnx"
    if not args.classifier:
        labels = work / "labels.npz"
        doc["label_s"] = s2r("hil", "label", args.task, "--no-image", "--episodes", str(args.label_episodes),
                             "--after-success", str(args.after_success), "--out", str(labels), "--seed", "100",
                             log=work / "label.log")
        doc["classifier_train_s"] = s2r("hil", "classifier", str(labels), "--inputs", "state", "--out", str(clf),
                                        "--steps", str(args.classifier_steps), "--target-fpr", str(args.target_fpr),
                                        log=work / "classifier.log")
        doc["label_log"] = (work / "label.log").read_text().strip().splitlines()[-1:]
        doc["classifier_log"] = (work / "classifier.log").read_text().strip().splitlines()[-3:]
    meta = json.loads(clf.with_name(clf.name + ".json").read_text())
    doc["classifier"] = {k: meta[k] for k in ("inputs", "threshold", "target_fpr", "calib", "test") if k in meta}
    print(f"classifier: threshold {meta['threshold']:.3f}, test {meta.get('test')}", flush=True)

    arms = {"true": [], "classifier": [f"classifier={clf}"]}
    results: dict[str, dict[int, dict]] = {a: {} for a in args.arms.split(",")}
    for a in results:
        (work / a).mkdir(exist_ok=True)
    jobs = [((a, s), lambda a=a, s=s: run_one(args.task, "hil", s, args.steps, args.evals, args.eval_episodes,
                                               work / a, arms[a])) for s in args.seeds for a in results]
    for (a, s), p in run_pool(jobs, args.parallel, loads):
        results[a][s] = {**curves(p.run_dir), "counts": counters(p.run_dir), "wall_s": time.monotonic() - p.t0}
        last = results[a][s]["eval"][-1]
        print(f"{a} seed {s}: success {last[1]:.2f} at {last[0]} steps ({results[a][s]['wall_s']:.0f} s)", flush=True)
        write(doc, results, loads, t_start, out)  # partial results survive a later failure
    print(json.dumps(write(doc, results, loads, t_start, out), indent=1))
    doc["classifier_on_true_runs"] = on_true_runs(work, clf, args.task)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    plot(doc, out.with_suffix(".png"))


def on_true_runs(work: Path, clf_path: Path, task: str) -> dict:
    """The classifier over the frames of the true-reward runs (their `replay/`, labelled by the simulator's reward).

    Per seed: the per-frame false-positive rate (frames the simulator calls no success), recall on the success
    frames, and the share of those runs' episodes in which some non-success frame would have fired it (and so
    ended the episode under a classifier reward).
    """
    from s2r.policies.hil import INTERVENED, PROPOSED
    from s2r.policies.replay import ReplayBuffer
    from s2r.real.reward_classifier import RewardClassifier

    clf = RewardClassifier.load(clf_path, task=task)
    out = {}
    # Finished runs only: re-opening a replay folder that a live run appends to could cut its last record.
    for run in sorted(r for r in (work / "true").glob("hil_s*") if (r / "policy.onnx").is_file()):
        meta = json.loads((run / "replay" / "meta.json").read_text())
        n_envs, dims = meta["num_envs"], {g: v["shape"] for g, v in meta["groups"].items()}
        buf = ReplayBuffer(dims, meta["action_dim"], 10**6, num_envs=n_envs, directory=run / "replay")
        try:
            n = len(buf)
            nxt, success, done = buf._next_obs["policy"][:n], buf._reward[:n] > 0, buf._done[:n]
        finally:
            buf.close()
        fired = np.asarray(clf(state=nxt), dtype=bool)
        episodes = ended_fp = 0
        for e in range(n_envs):  # rows are step-major, envs interleaved
            rows = np.arange(e, n, n_envs)
            ends = np.flatnonzero(done[rows])
            for seg in np.split(rows, ends + 1)[: len(ends)]:
                episodes += 1
                ended_fp += bool((fired[seg] & ~success[seg]).any())
        assert PROPOSED in dims and INTERVENED in dims  # a hil replay, not another run's
        out[run.name] = {"frames": int(n), "success_frames": int(success.sum()),
                         "fpr_per_frame": float(fired[~success].mean()), "recall": float(fired[success].mean())
                         if success.any() else None, "episodes": episodes, "episodes_a_false_positive_would_end":
                         ended_fp, "share": ended_fp / max(1, episodes)}
    return out


def write(doc: dict, results: dict, loads: list[float], t_start: float, out: Path) -> dict:
    """Summaries per arm (success curve by step, final counts) into `doc`, written to `<out>.json`."""
    summary = {}
    for a, per_seed in results.items():
        if not per_seed:
            continue
        steps = sorted({st for r in per_seed.values() for st, _ in r["eval"]})
        curve = {str(st): [dict(r["eval"]).get(st) for r in per_seed.values()] for st in steps}
        final = [r["eval"][-1][1] for r in per_seed.values()]
        s = {"final_success_mean": float(np.mean(final)), "final_success_per_seed": final, "curve": curve,
             "wall_s": [r["wall_s"] for r in per_seed.values()]}
        ends = [r["counts"][-1] for r in per_seed.values() if r["counts"]]
        if ends:
            s["counts_per_seed"] = ends
            fp, fired, eps = (sum(e.get(k, 0.0) for e in ends) for k in ("false_positive_ends", "classifier_ends",
                                                                          "episodes_ended"))
            s["false_positive_share_of_classifier_ends"] = fp / max(1.0, fired)
            s["false_positive_share_of_all_episodes"] = fp / max(1.0, eps)
        summary[a] = s
    doc.update({"commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
                "load_mean": float(np.mean(loads)), "load_max": float(np.max(loads)),
                "wall_s": time.monotonic() - t_start, "summary": summary,
                "runs": {a: {str(s): r for s, r in v.items()} for a, v in results.items()}})
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    return summary


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for k, (arm, per_seed) in enumerate(doc["runs"].items()):
        for i, r in enumerate(per_seed.values()):
            xs, ys = zip(*r["eval"], strict=True)
            a1.plot(xs, ys, color=f"C{k}", alpha=0.8, marker="o", label=f"{arm} reward" if i == 0 else None)
            if r["counts"]:
                xs = [c["progress"] for c in r["counts"]]
                a2.plot(xs, [c.get("false_positive_ends", 0.0) for c in r["counts"]], color="C3", alpha=0.8,
                        label="false-positive ends" if i == 0 else None)
                a2.plot(xs, [c.get("classifier_ends", 0.0) for c in r["counts"]], color="C2", alpha=0.8,
                        label="classifier ends" if i == 0 else None)
                a2.plot(xs, [c.get("episodes_ended", 0.0) for c in r["counts"]], color="C7", alpha=0.6, ls="--",
                        label="episodes ended" if i == 0 else None)
    a1.set(xlabel="env steps", ylabel=f"success (policy alone, {doc['eval_episodes']} episodes)", title=doc["task"],
           ylim=(-0.02, 1.02))
    a2.set(xlabel="env steps", ylabel="episodes (cumulative)", title="classifier reward: episode ends during training")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
