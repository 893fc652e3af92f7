"""Reward classifier: precision, recall and false-positive rate on held-out episodes of Panda-Lift-Cube.

    python bench/reward_classifier.py                                   # 160 episodes, 64x64, image and state
    python bench/reward_classifier.py --episodes 60 --size 32 --inputs image

Labels come from the simulator (`collect_sim_labels`: the scripted expert fails on purpose in half of the
episodes: aiming off, releasing early); a frame is a success frame on the step the simulator reports success.
Each `--inputs` variant trains on the same train episodes, picks its threshold on the calibration episodes'
failure frames for `--target-fpr`, and is scored on the test episodes. The label file is kept
(`--labels` reuses one). Writes bench/results/reward_classifier.json (command line, git commit, load average,
wall time) and the exported ONNX classifiers under runs/bench_reward_classifier/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="Panda-Lift-Cube")
    p.add_argument("--episodes", type=int, default=160)
    p.add_argument("--size", type=int, default=64, help="square image size (default 64)")
    p.add_argument("--inputs", nargs="+", default=["image", "state"], choices=["image", "state", "image+state"])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--target-fpr", type=float, default=0.02)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--labels", help="reuse this label file instead of recording")
    p.add_argument("--out", default=str(REPO / "bench/results/reward_classifier.json"))
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from s2r.policies.reward_classifier import ClassifierConfig, collect_sim_labels, export_classifier, train_classifier
    from s2r.real.reward_classifier import RewardClassifier
    from s2r.real.reward_labels import load_labels

    load0, t0 = os.getloadavg(), time.monotonic()
    run_dir = REPO / "runs/bench_reward_classifier"
    collect_s = None
    if args.labels:
        labels_path = Path(args.labels)
    else:
        rec = collect_sim_labels(args.task, args.episodes, image_size=(args.size, args.size), num_envs=4,
                                 log=lambda m: print(m, file=sys.stderr))
        collect_s = time.monotonic() - t0
        labels_path = rec.save(run_dir / f"labels_{args.size}px_{args.episodes}ep.npz")
    labels = load_labels(labels_path)
    runs = []
    for inputs in args.inputs:
        for seed in args.seeds:
            t = time.monotonic()
            cfg = ClassifierConfig(inputs=inputs, steps=args.steps, target_fpr=args.target_fpr, seed=seed)
            trained = train_classifier(labels, cfg, log=lambda m: print(m, file=sys.stderr))
            train_s = time.monotonic() - t
            onnx_path = export_classifier(trained, run_dir / f"{inputs.replace('+', '_')}_s{seed}.onnx", str(labels_path))
            clf = RewardClassifier.load(onnx_path, task=args.task)
            n = min(256, len(labels))
            t = time.perf_counter()
            for i in range(n):
                clf.prob(image=labels.image[i] if labels.image is not None else None,
                         state=labels.state[i] if labels.state is not None else None)
            sweep = []
            for target in (0.05, 0.02, 0.01, 0.005, 0.002):  # the same net, thresholds for other targets
                thr, _, test = trained.at_target(target)
                sweep.append({"target_fpr": target, "threshold": thr, **{k: test[k] for k in (
                    "precision", "recall", "fpr_failure_episodes", "failure_episodes_ended_by_false_positive")}})
            runs.append({"inputs": inputs, "seed": seed, "threshold": trained.threshold, "train_s": round(train_s, 1),
                         "target_sweep_test": sweep,
                         "final_loss": float(sum(trained.losses[-20:]) / 20), "test": trained.test,
                         "calib": trained.calib, "onnx_ms_per_frame": 1000 * (time.perf_counter() - t) / n,
                         "onnx": str(onnx_path.relative_to(REPO))})
            print(json.dumps({k: runs[-1][k] for k in ("inputs", "seed", "threshold", "test")}), file=sys.stderr)
    result = {
        "command": " ".join([sys.executable, *sys.argv]),
        "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip(),
        "load_avg_before": load0, "load_avg_after": os.getloadavg(), "wall_s": round(time.monotonic() - t0, 1),
        "machine": f"{os.cpu_count()} CPUs shared with other jobs (see load average); torch 1 thread",
        "task": args.task, "episodes": len(set(labels.episode.tolist())), "frames": len(labels),
        "success_frames": int(labels.label.sum()),
        "success_episodes": len(set(labels.episode[labels.episode_success].tolist())),
        "image_size": labels.meta.get("image_size"), "label_collect_s": collect_s, "target_fpr": args.target_fpr,
        "runs": runs,
        "notes": "test = episodes held out of training and of the threshold pick; fpr_failure_episodes = share of "
                 "frames of failed test episodes scored as success; failure_episodes_ended_by_false_positive = share "
                 "of failed test episodes with at least one such frame (the episode would have ended with reward 1). "
                 "One success frame per successful episode (the simulator ends the episode on success), so positives "
                 "are few and recall is measured on few frames.",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps([{k: r[k] for k in ("inputs", "threshold", "test")} for r in runs], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
