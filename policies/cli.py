"""`s2r`: a thin dispatcher. Each subcommand parses its flags and calls into the packages."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _kv(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"s2r: --set wants key=value, got '{item}'")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _fail(msg: str, code: int = 2) -> int:
    print(f"s2r: error: {msg}", file=sys.stderr)
    return code


# ---- tasks --------------------------------------------------------------------------------------


def cmd_tasks(args: argparse.Namespace) -> int:
    from s2r.sim import get_task, gym_id, task_ids

    for tid in task_ids():
        print(f"{tid:28s} {gym_id(tid):34s} {get_task(tid).description}")
    return 0


# ---- train --------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume and args.algo == "ppo":
        # `s2r train --resume RUN` continues whatever algorithm the run was started with.
        run = Path(args.resume) if args.resume != "latest" else _latest_run(args.runs, args.task)
        kind = torch_load_algo(run / "checkpoint.pt") if run is not None and (run / "checkpoint.pt").is_file() else None
        if kind in ("mfrl", "residual"):
            args.algo = kind
            args.resume = str(run)
    if args.algo in ("residual", "finetune"):
        return cmd_train_residual(args)
    if args.algo == "mfrl":
        return cmd_train_mfrl(args)
    if args.base:
        return _fail("--base is for --algo residual/finetune (the behaviour-cloning run to start from)")
    from s2r.policies.runner import (
        CHECKPOINT,
        CheckpointError,
        OnPolicyRunner,
        TrainConfig,
        load_checkpoint,
        replace_budget,
        train_config_from_checkpoint,
    )
    from s2r.sim import UnknownTaskError, task_config
    from s2r.sim.config import ConfigError, apply_overrides, from_dict

    try:
        resume_from = None
        if args.resume:
            run_dir = Path(args.resume) if args.resume != "latest" else _latest_run(args.runs, args.task)
            if run_dir is None:
                return _fail(f"--resume: no earlier run of '{args.task or 'any task'}' under {args.runs}/")
            resume_from = run_dir / CHECKPOINT
            ckpt = load_checkpoint(resume_from, args.task)
            args.task = ckpt["task_id"]  # `s2r train --resume` alone continues whatever ran last
            cfg = train_config_from_checkpoint(ckpt)
            tcfg = from_dict(type(task_config(args.task)), ckpt["task_cfg"])
        else:
            if not args.task:
                return _fail("train needs a task id (see `s2r tasks`), or --resume to continue a run")
            tcfg = task_config(args.task, _kv(args.set))
            cfg = TrainConfig()
            run_dir = Path(args.run_dir) if args.run_dir else Path(args.runs) / args.task / time.strftime("%Y%m%d-%H%M%S")
        cfg = apply_overrides(cfg, _kv(args.train_set))
        if args.num_envs is not None and not args.resume:
            cfg = apply_overrides(cfg, {"num_envs": args.num_envs})
        if args.seed is not None and not args.resume:
            cfg = apply_overrides(cfg, {"seed": args.seed})
        steps = args.steps
        if args.resume and steps is None and args.minutes is None:
            steps = cfg.max_env_steps  # same budget as the run was started with
        cfg = replace_budget(cfg, steps, args.minutes)
        runner = OnPolicyRunner(args.task, tcfg, cfg, run_dir, resume_from=resume_from, progress=not args.no_progress)
    except (UnknownTaskError, ConfigError, CheckpointError, ValueError) as exc:
        return _fail(str(exc))
    print(f"s2r: training {args.task} with {cfg.num_envs} envs -> {run_dir}", flush=True)
    try:
        result = runner.learn()
    finally:
        runner.close()
    print(json.dumps(result))
    print(f"s2r: exported {run_dir / 'policy.onnx'} (+ policy.json, learning_curve.png)")
    return 130 if result["interrupted"] else 0


def cmd_train_residual(args: argparse.Namespace) -> int:
    from s2r.policies.offpolicy import NonFiniteLossError
    from s2r.policies.residual import CHECKPOINT, ResidualConfig, ResidualRunner
    from s2r.policies.runner import CheckpointError
    from s2r.real.episodes import EpisodeFormatError
    from s2r.sim import UnknownTaskError
    from s2r.sim.config import ConfigError, apply_overrides, from_dict

    try:
        if args.resume:
            run_dir = Path(args.resume) if args.resume != "latest" else _latest_run(args.runs, args.task)
            if run_dir is None or not (run_dir / CHECKPOINT).is_file():
                return _fail(f"--resume: no residual run to continue at {run_dir or args.runs}")
            saved = json.loads((run_dir / "config.json").read_text())
            task, base = saved["task_id"], saved["base"]
            cfg = from_dict(ResidualConfig, saved["residual"])
            if args.steps is not None:
                cfg = apply_overrides(cfg, {"max_env_steps": args.steps})
            overrides = None
            from s2r.sim import task_config

            tcfg = from_dict(type(task_config(task)), saved["task"])
        else:
            if not args.task or not args.base:
                return _fail(f"--algo {args.algo} needs a task id and --base <behaviour-cloning run> (from `s2r train-bc`)")
            task, base = args.task, args.base
            cfg = ResidualConfig(finetune=args.algo == "finetune")
            cfg = apply_overrides(cfg, _kv(args.train_set))
            for key, val in (("max_env_steps", args.steps), ("num_envs", args.num_envs), ("seed", args.seed)):
                if val is not None:
                    cfg = apply_overrides(cfg, {key: val})
            stamp = time.strftime("%Y%m%d-%H%M%S")
            run_dir = Path(args.run_dir) if args.run_dir else Path(args.runs) / task / f"{args.algo}_{stamp}"
            overrides, tcfg = _kv(args.set), None
        runner = ResidualRunner(task, base, run_dir, cfg, task_overrides=overrides, resume=bool(args.resume),
                                progress=not args.no_progress, task_cfg=tcfg)
    except (UnknownTaskError, ConfigError, CheckpointError, EpisodeFormatError, FileNotFoundError, ValueError) as exc:
        return _fail(str(exc))
    print(f"s2r: {args.algo} RL on {task} from base {base} -> {run_dir}", flush=True)
    try:
        result = runner.learn()
    except NonFiniteLossError as exc:
        return _fail(str(exc), 1)
    finally:
        runner.close()
    print(json.dumps(result))
    if result["failed"]:
        return _fail(f"{result['failed']} (last good checkpoint kept in {run_dir})", 1)
    print(f"s2r: exported {run_dir / 'policy.onnx'} (+ policy.json, learning_curve.png)")
    return 130 if result["interrupted"] else 0


def cmd_train_mfrl(args: argparse.Namespace) -> int:
    from s2r.policies.mfrl import CHECKPOINT, build_runner
    from s2r.policies.runner import CheckpointError
    from s2r.sim import UnknownTaskError

    try:
        resume_from = None
        if args.resume:
            run = Path(args.resume) if args.resume != "latest" else _latest_run(args.runs, args.task)
            if run is None or not (run / CHECKPOINT).is_file():
                return _fail(f"--resume: no mfrl run to continue at {run or args.runs}")
            resume_from = run / CHECKPOINT
        elif not args.task:
            return _fail("--algo mfrl needs a task id (e.g. Crazyflie-Replan-Waypoints)")
        runner = build_runner(None if resume_from else args.task, args.run_dir, runs_root=args.runs,
                              task_overrides=_kv(args.set), train_overrides=_kv(args.train_set), resume_from=resume_from,
                              seed=args.seed, rounds=args.steps, minutes=args.minutes, progress=not args.no_progress)
    except (UnknownTaskError, CheckpointError, ValueError) as exc:
        return _fail(str(exc))
    try:
        result = runner.learn()
    finally:
        runner.close()
    print(json.dumps(result, default=str))
    return 130 if result.get("interrupted") else 0


def cmd_demos(args: argparse.Namespace) -> int:
    from s2r.policies.demos import collect_demos
    from s2r.real.episodes import EpisodeFormatError
    from s2r.sim import UnknownTaskError
    from s2r.sim.config import ConfigError

    out = Path(args.out) if args.out else Path("demos") / args.task
    try:
        res = collect_demos(args.task, out, args.n, noise=args.noise, failure_rate=args.failure_rate, num_envs=args.num_envs,
                            seed=args.seed, task_overrides=_kv(args.set), progress=not args.no_progress)
    except (UnknownTaskError, ConfigError, EpisodeFormatError, ValueError) as exc:
        return _fail(str(exc))
    except ModuleNotFoundError as exc:
        return _fail(f"no scripted expert for {args.task} ({exc})")
    print(json.dumps(res))
    print(f"s2r: {res['episodes']} episodes in {out} ({res['success_rate'] * 100:.0f}% of the new ones succeeded)")
    return 0


def cmd_train_bc(args: argparse.Namespace) -> int:
    from s2r.policies.bc import BCConfig, train_bc
    from s2r.policies.export import ExportError
    from s2r.real.episodes import EpisodeFormatError
    from s2r.sim import UnknownTaskError
    from s2r.sim.config import ConfigError, apply_overrides

    demos = Path(args.demos) if args.demos else Path("demos") / args.task
    run_dir = Path(args.run_dir) if args.run_dir else Path(args.runs) / args.task / f"bc_{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        cfg = apply_overrides(BCConfig(), _kv(args.train_set))
        if args.updates is not None:
            cfg = apply_overrides(cfg, {"updates": args.updates})
        res = train_bc(args.task, demos, run_dir, cfg, task_overrides=_kv(args.set), progress=not args.no_progress)
    except (UnknownTaskError, ConfigError, EpisodeFormatError, ExportError, ValueError) as exc:
        return _fail(str(exc))
    print(json.dumps(res))
    print(f"s2r: behaviour cloning of {res['episodes']} episodes -> {run_dir} (bc.pt, policy.onnx + policy.json)")
    return 0


def _latest_run(root: str, task: str | None) -> Path | None:
    """Newest run (by checkpoint time) of `task`, or of any task when `task` is None."""
    pattern = f"{task}/*/checkpoint.pt" if task else "*/*/checkpoint.pt"
    ckpts = sorted(Path(root).glob(pattern), key=lambda p: p.stat().st_mtime)
    return ckpts[-1].parent if ckpts else None


# ---- eval / play / export -----------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    from s2r.policies.evaluate import evaluate, resolve_run
    from s2r.real.metadata import MetadataError
    from s2r.sim import UnknownTaskError
    from s2r.sim.config import ConfigError

    try:
        run = resolve_run(args.run)
        kind = _eval_kind(run)
        if kind == "planner":
            from s2r.policies.mfrl import evaluate_planner, summary_lines

            res = evaluate_planner(run, n_sets=args.episodes, seed=args.seed)
            print("\n".join(summary_lines(res)))
            if args.json:
                print(json.dumps(res, default=str))
            return 0
        if kind == "success":
            return _eval_success(run, args)
        res = evaluate(run, episodes=args.episodes, seed=args.seed, overrides=_kv(args.set))
    except (FileNotFoundError, MetadataError, UnknownTaskError, ConfigError) as exc:
        return _fail(str(exc))
    print(f"{run}: {res.episodes} episodes")
    print(f"  velocity tracking error  {res.mean_vel_error:.3f} m/s")
    print(f"  fall rate                {res.fall_rate * 100:.1f} %")
    print(f"  mean return              {res.mean_return:.2f}")
    print(f"  mean episode length      {res.mean_length_s:.1f} s")
    if args.json:
        print(json.dumps(res.as_dict()))
    return 0


def _eval_kind(run: Path) -> str:
    """How a run is judged: "planner" (an mfrl export), "success" (sparse-success task) or "velocity"."""
    from s2r.real.metadata import load_metadata
    from s2r.sim import get_task

    meta = load_metadata(run / "policy.json")
    if meta.planner is not None:
        return "planner"
    return "success" if getattr(get_task(meta.task_id).env_cls, "sparse_success", False) else "velocity"


def _eval_success(run: Path, args: argparse.Namespace) -> int:
    """Sparse-success tasks: success rate; for a residual run also its base, on the same episodes."""
    from s2r.policies.evaluate import evaluate_success
    from s2r.real.metadata import load_metadata

    rows = [("policy", run)]
    residual = load_metadata(run / "policy.json").residual
    if residual and not residual.finetune and Path(residual.base, "policy.onnx").is_file():
        rows.insert(0, ("base alone", Path(residual.base)))
    print(f"{run}: {args.episodes} episodes")
    out = {}
    for name, path in rows:
        res = evaluate_success(path, episodes=args.episodes, seed=args.seed, overrides=_kv(args.set))
        out[name] = res
        label = "base + residual" if residual and name == "policy" and not residual.finetune else name
        print(f"  {label:18s} success {res['success_rate'] * 100:5.1f} %   mean episode {res['mean_length_s']:.1f} s")
    if args.json:
        print(json.dumps(out))
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    from s2r.policies.evaluate import RenderUnavailable, play, resolve_run
    from s2r.real.metadata import MetadataError

    cmd = tuple(float(v) for v in args.command.split(",")) if args.command else None
    if cmd is not None and len(cmd) != 3:
        return _fail("--command wants vx,vy,wz")
    try:
        res = play(resolve_run(args.run), Path(args.video) if args.video else None, args.seconds, cmd, args.seed)
    except RenderUnavailable as exc:
        return _fail(str(exc))
    except (FileNotFoundError, MetadataError) as exc:
        return _fail(str(exc))
    print(json.dumps(res))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from s2r.policies.export import ExportError
    from s2r.policies.runner import CHECKPOINT, CheckpointError, export_checkpoint

    try:
        ckpt = Path(args.run) / CHECKPOINT
        kind = torch_load_algo(ckpt) if ckpt.is_file() else None
        if kind == "mfrl":
            from s2r.policies.mfrl import export_checkpoint as export_planner_checkpoint

            print(json.dumps(export_planner_checkpoint(Path(args.run))))
            return 0
        if kind == "residual":
            from s2r.policies.residual import export_run

            print(json.dumps(export_run(Path(args.run))))
            return 0
        print(json.dumps(export_checkpoint(Path(args.run))))
    except (CheckpointError, ExportError) as exc:
        return _fail(str(exc))
    return 0


def torch_load_algo(path: Path) -> str | None:
    """The algorithm tag of a checkpoint ("mfrl", "residual"; PPO checkpoints carry none)."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # unreadable: let the normal export path report it
        return None
    return (ckpt.get("algo") or ckpt.get("kind")) if isinstance(ckpt, dict) else None


# ---- deploy -------------------------------------------------------------------------------------


def _ros_deploy() -> Any:
    """s2r_ros.deploy (stdlib + PyYAML; the nodes it starts import rclpy), from the sourced workspace or the tree."""
    try:
        import s2r_ros.deploy as deploy
    except ImportError:  # workspace not built/sourced: use the package from the source tree
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ros_ws" / "src" / "s2r_ros"))
        import s2r_ros.deploy as deploy
    return deploy


def cmd_deploy(args: argparse.Namespace) -> int:
    return _ros_deploy().run_deploy(args)


# ---- calibrate ----------------------------------------------------------------------------------


def cmd_calibrate(args: argparse.Namespace) -> int:
    from s2r.calibration.cli import run

    return run(args)


# ---- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s2r", description="Train in MuJoCo, export ONNX, deploy with ROS 2.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("tasks", help="list registered tasks")
    t.set_defaults(func=cmd_tasks)

    t = sub.add_parser("train", help="train a policy headless and export it to ONNX")
    t.add_argument("task", nargs="?", help="task id (see `s2r tasks`); optional with --resume")
    t.add_argument("--steps", type=int, help="env-step budget")
    t.add_argument("--minutes", type=float, help="wall-clock budget")
    t.add_argument("--num-envs", type=int, help="parallel envs (default 256)")
    t.add_argument("--seed", type=int)
    t.add_argument("--resume", nargs="?", const="latest", metavar="RUN", help="continue a run (default: latest)")
    t.add_argument("--runs", default="runs", help="root folder of runs (default runs/)")
    t.add_argument("--run-dir", help="exact run folder")
    t.add_argument("--set", action="append", metavar="KEY=VAL", help="task config override, e.g. rewards.feet_air_time=0.5")
    t.add_argument("--train-set", action="append", metavar="KEY=VAL", help="trainer override, e.g. algo.entropy_coef=0.01")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--algo", choices=("ppo", "residual", "finetune", "mfrl"), default="ppo",
                   help="ppo (default); residual RL on a BC base or full fine-tuning of it (need --base); mfrl (quadrotor)")
    t.add_argument("--base", metavar="RUN", help="behaviour-cloning run folder for --algo residual/finetune")
    t.set_defaults(func=cmd_train)

    t = sub.add_parser("demos", help="record scripted-expert demonstrations in the episode format")
    t.add_argument("action", choices=("collect",))
    t.add_argument("task", help="task id with a scripted expert (e.g. Panda-Lift-Cube)")
    t.add_argument("--n", type=int, default=50, help="episodes to record (default 50)")
    t.add_argument("--out", help="episode folder (default demos/<task>; appends if it exists)")
    t.add_argument("--noise", type=float, default=0.1, help="expert action-noise std (default 0.1)")
    t.add_argument("--failure-rate", type=float, default=0.0, help="fraction of episodes the expert fumbles")
    t.add_argument("--num-envs", type=int, default=8)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--set", action="append", metavar="KEY=VAL", help="task config override")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_demos)

    t = sub.add_parser("train-bc", help="behaviour cloning (action chunking) from recorded demos, exported to ONNX")
    t.add_argument("task", help="task id")
    t.add_argument("--demos", help="episode folder (default demos/<task>)")
    t.add_argument("--updates", type=int, help="gradient steps")
    t.add_argument("--runs", default="runs")
    t.add_argument("--run-dir", help="exact run folder")
    t.add_argument("--set", action="append", metavar="KEY=VAL", help="task config override")
    t.add_argument("--train-set", action="append", metavar="KEY=VAL", help="BC override, e.g. chunk=8")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train_bc)

    t = sub.add_parser("eval", help="tracking error and fall rate, or success rate (base vs residual), of an exported policy")
    t.add_argument("run", help="run folder (or runs/<task> for its latest run)")
    t.add_argument("--episodes", type=int, default=50)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--set", action="append", metavar="KEY=VAL", help="task config override")
    t.add_argument("--json", action="store_true", help="also print one JSON line")
    t.set_defaults(func=cmd_eval)

    t = sub.add_parser("play", help="roll out a policy, optionally rendering an MP4 offscreen")
    t.add_argument("run", help="run folder")
    t.add_argument("--video", help="output .mp4")
    t.add_argument("--seconds", type=float, default=10.0)
    t.add_argument("--command", help="fixed command vx,vy,wz (default: the task's random commands)")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_play)

    t = sub.add_parser("export", help="re-export policy.onnx + policy.json from a run's checkpoint")
    t.add_argument("run", help="run folder")
    t.set_defaults(func=cmd_export)

    t = sub.add_parser("deploy", help="start a deployment manifest's ROS 2 nodes (e.g. policy + MuJoCo sim bridge)")
    try:
        _ros_deploy().build_parser(t)
        t.set_defaults(func=cmd_deploy)
    except ImportError:
        # A wheel install has no ros_ws/ beside it; the other commands must still work.
        t.set_defaults(func=lambda _a: _fail("s2r deploy needs the s2r_ros package: `colcon build` ros_ws/ and "
                                             "source install/setup.sh, or run from a source checkout"))

    t = sub.add_parser("calibrate", help="camera, hand-eye and actuator calibration to versioned YAML (+ reports)")
    from s2r.calibration.cli import add_arguments as calibrate_arguments  # argparse only; OpenCV etc. load on use

    calibrate_arguments(t)
    t.set_defaults(func=cmd_calibrate)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `s2r` console script."""
    if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
