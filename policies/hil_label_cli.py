"""`s2r hil label` and `s2r hil classifier`: record success/failure-labelled frames, train the reward classifier.

    s2r hil label Panda-Lift-Cube --episodes 160 --out labels.npz                 # the simulator labels
    s2r hil label Panda-Lift-Cube --source console --episodes 20 --out mine.npz   # an operator labels in the browser
    s2r hil classifier labels.npz --out runs/clf/classifier.onnx --target-fpr 0.02

With `--source console` (or a teleop device: keyboard, gamepad, spacemouse) the simulator stands in for the
robot and the scripted expert drives it; the operator watches the console and labels: a frame is a success
frame while the hold-to-label button is down (labelling mode) or when the success button is pressed (which
also ends the episode as a success); failure and reset end it as a failure. The classifier prints precision,
recall and the false-positive rate on held-out failure episodes, and exports ONNX + metadata for
`s2r.real.reward_classifier.RewardClassifier`.

Registered by `s2r.policies.hil_cli.add_parser` with `add_parsers(hsub)` on its `hil` sub-parsers.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _fail(msg: str) -> int:
    print(f"s2r hil: {msg}", file=sys.stderr)
    return 2


def add_parsers(hsub: argparse._SubParsersAction) -> None:
    """Add `label` and `classifier` to the `s2r hil` sub-commands."""
    t = hsub.add_parser("label", help="record success/failure-labelled frames for the reward classifier")
    t.add_argument("task", help="task id (a Panda task for images)")
    t.add_argument("--out", required=True, help="label file to write (.npz)")
    t.add_argument("--episodes", type=int, default=100, help="episodes to record (default 100)")
    t.add_argument("--source", default="sim", help="who labels: sim (the simulator's success), console (the web "
                   "console), or a teleop device: keyboard, gamepad, spacemouse")
    t.add_argument("--size", type=int, default=64, help="square image size in pixels (default 64)")
    t.add_argument("--no-image", action="store_true", help="record state only")
    t.add_argument("--no-state", action="store_true", help="record images only")
    t.add_argument("--failure-rate", type=float, default=0.5, help="episodes the expert fails on purpose (sim)")
    t.add_argument("--after-success", type=int, default=0, help="frames recorded after an episode's first success, "
                   "each labelled by the simulator (sim; default 0: the episode ends at its first success frame)")
    t.add_argument("--console", default="127.0.0.1:8765", metavar="HOST:PORT", help="console address (--source console)")
    t.add_argument("--rate-hz", type=float, default=10.0, help="control rate with an operator (default 10)")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_label)

    t = hsub.add_parser("classifier", help="train the reward classifier on a label file and export it to ONNX")
    t.add_argument("labels", help="label file from `s2r hil label`")
    t.add_argument("--out", required=True, help="ONNX file to write (metadata goes to <out>.json)")
    t.add_argument("--inputs", default="image", choices=["image", "state", "image+state"])
    t.add_argument("--steps", type=int, default=400)
    t.add_argument("--target-fpr", type=float, default=0.02, help="false-positive rate on held-out failure episodes "
                   "that the threshold keeps to (default 0.02)")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_classifier)


def cmd_label(args: argparse.Namespace) -> int:
    from s2r.policies.reward_classifier import collect_sim_labels
    from s2r.sim import UnknownTaskError, canonical_task_id

    if args.no_image and args.no_state:
        return _fail("--no-image and --no-state leave nothing to record; drop one of them")
    try:
        task = canonical_task_id(args.task)
    except UnknownTaskError as exc:
        return _fail(str(exc))
    size = None if args.no_image else (args.size, args.size)
    try:
        if args.source == "sim":
            rec = collect_sim_labels(task, args.episodes, image_size=size, state=not args.no_state,
                                     failure_rate=args.failure_rate, seed=args.seed, after_success=args.after_success,
                                     log=lambda m: print(m, file=sys.stderr))
        else:
            rec = _label_with_operator(args, task, size)
    except ValueError as exc:
        return _fail(str(exc))
    if rec is None:
        return 2
    path = rec.save(args.out)
    print(f"s2r hil label: {rec.episode} episodes, {rec.frames} frames ({rec.positives} success) -> {path}")
    return 0


def _label_with_operator(args: argparse.Namespace, task: str, size: tuple[int, int] | None) -> Any:
    from s2r.real.hil_console import ConsoleError, OperatorConsole
    from s2r.real.reward_labels import LabelRecorder
    from s2r.real.teleop import DEVICES, TeleopError
    from s2r.sim import make
    from s2r.sim.registry import get_task
    from s2r.sim.tasks.experts import make_expert

    cfg = get_task(task).cfg
    if size is None:
        size = (args.size, args.size)  # the operator needs to see the scene even when only state is recorded
    cfg = dataclasses.replace(cfg, image=True, image_size=size)
    console = device = None
    try:
        if args.source == "console":
            console = OperatorConsole(bind=args.console, title=f"s2r hil label {task}")
            console.start()
            print(f"s2r hil label: open {console.url} (labelling mode: hold 'success frame'; success/failure end the "
                  "episode)", file=sys.stderr)
            read: Callable = console.read
        else:
            device = DEVICES.open(args.source)
            read = device.read
    except (ConsoleError, TeleopError, ValueError) as exc:
        print(f"s2r hil: {exc}", file=sys.stderr)
        return None
    env = make(task, 1, cfg=cfg, seed=args.seed)
    try:
        expert = make_expert(task, 1, noise=0.1, failure_rate=args.failure_rate, seed=args.seed, cfg=cfg)
        rec = LabelRecorder(task, cameras=(cfg.image_camera,), image_size=None if args.no_image else size,
                            state_dim=None if args.no_state else env.spec.groups["policy"].shape[-1], source=args.source)
        record_with_operator(env, expert, rec, read, args.episodes, console=console, rate_hz=args.rate_hz)
        return rec
    finally:
        env.close()
        if console is not None:
            console.close()
        if device is not None:
            device.close()


def record_with_operator(env: Any, expert: Any, rec: Any, read: Callable[[], Any], episodes: int, *, console: Any = None,
                         rate_hz: float = 10.0) -> None:
    """The expert drives one env; `read()` (a console or device) labels frames and ends episodes."""
    obs = env.reset()
    expert.reset()
    period = 1.0 / rate_hz if rate_hz > 0 else 0.0
    success_eps = 0
    labelled = False  # this episode holds a success frame
    while rec.episode < episodes:
        frame = obs["image"][0]
        if console is not None:
            console.publish_frame(frame)
            console.publish_stats({"episode": rec.episode, "frames": rec.frames, "success_episodes": success_eps,
                                   "success_rate": success_eps / max(1, rec.episode)})
        cmd = read()
        if getattr(cmd, "paused", False):
            time.sleep(period or 0.05)
            continue
        label = bool(cmd.success or getattr(cmd, "label", False))
        labelled |= label
        rec.add(label=label, image=frame if rec.meta["image_size"] else None,
                state=obs["policy"][0] if rec.meta["state_dim"] else None, intervened=bool(cmd.intervene))
        ended = cmd.success or cmd.failure or cmd.reset
        if ended:
            rec.end_episode(labelled)
            success_eps += int(labelled)
            labelled = False
            obs = env.reset()
            expert.reset()
        else:
            action = np.asarray(cmd.action, np.float32)[None] if cmd.intervene else expert.act(obs)
            obs, _, term, trunc, _ = env.step(action)
            if term[0] or trunc[0]:  # the simulator ended it: the operator's labels say whether it succeeded
                rec.end_episode(labelled)
                success_eps += int(labelled)
                labelled = False
                expert.reset()
        if period:
            time.sleep(period)


def cmd_classifier(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    from s2r.policies.reward_classifier import ClassifierConfig, export_classifier, train_classifier
    from s2r.real.reward_labels import LabelFileError, load_labels

    torch.set_num_threads(1)
    try:
        labels = load_labels(args.labels)
        cfg = ClassifierConfig(inputs=args.inputs, steps=args.steps, target_fpr=args.target_fpr, seed=args.seed)
        trained = train_classifier(labels, cfg, log=lambda m: print(m, file=sys.stderr))
    except (LabelFileError, ValueError) as exc:
        return _fail(str(exc))
    path = export_classifier(trained, args.out, labels_file=str(Path(args.labels).resolve()))
    for part, m in (("calibration", trained.calib), ("test", trained.test)):
        print(f"{part:11s} precision {m['precision']:.3f}  recall {m['recall']:.3f}  false-positive rate on failure "
              f"episodes {m['fpr_failure_episodes']:.3f}  ({m['positives']} success / {m['negatives']} other frames, "
              f"{m['failure_episodes']} failure episodes; {m['failure_episodes_ended_by_false_positive']:.2f} of them "
              "would end on a false positive)")
    print(f"threshold {trained.threshold:.4f} (target false-positive rate {cfg.target_fpr}) -> {path}")
    return 0
