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


# ---- train ----------------------------------------------------------------------------------------

# CLI flags that set a field of the algorithm's config, for the algorithms whose config has that field.
_CONFIG_FLAGS = (("base", "base"), ("demos", "demos"), ("flights", "flights"))
_RESUME_FLAGS = ("flights",)  # settings a resumed run may take (new data, not a new experiment)


def cmd_train(args: argparse.Namespace) -> int:
    """`s2r train <task> --algo <id>` or `s2r train --resume [RUN]`: every algorithm through the one run driver."""
    from s2r.policies import distributed
    from s2r.policies.algorithm import AlgorithmTaskMismatch, UnknownAlgorithmError, get_algorithm
    from s2r.policies.driver import Budget, CheckpointError, RunDriver, new_run_spec, resume_run_spec
    from s2r.policies.export import ExportError
    from s2r.policies.offpolicy import NonFiniteLossError
    from s2r.real.episodes import EpisodeFormatError
    from s2r.sim import UnknownTaskError, canonical_task_id
    from s2r.sim.config import ConfigError

    budget = Budget(steps=args.steps, minutes=args.minutes)
    if args.task:
        args.task = canonical_task_id(args.task)  # `s2r/<task>-v0` (what `s2r tasks` prints) names the same task
    if args.flights and not Path(args.flights).is_dir():
        return _fail(f"--flights {args.flights}: no such folder; give the folder holding the flight logs (.mcap/.csv)")
    dist = distributed.from_environment()  # started by torchrun: one rank of a data-parallel run
    try:
        if args.resume:
            run_dir = Path(args.resume) if args.resume != "latest" else _latest_run(args.runs, args.task)
            if run_dir is None:
                return _fail(f"--resume: no earlier run of '{args.task or 'any task'}' under {args.runs}/")
            if (any(getattr(args, flag) for flag, _ in _CONFIG_FLAGS if flag not in _RESUME_FLAGS) or args.set
                    or args.num_envs or args.seed is not None or getattr(args, "backend", None)
                    or getattr(args, "device", None)):
                return _fail("--resume continues a run with the settings it was started with; only --steps, --minutes, "
                             "--train-set and --flights may change")
            overrides = _kv(args.train_set)
            if args.flights:
                algo = resume_run_spec(run_dir).algo
                if "flights" not in getattr(get_algorithm(algo).config_cls, "__dataclass_fields__", {}):
                    users = "/".join(_algos_with_field("flights"))
                    return _fail(f"--flights adds logged flights to a {users} run; {run_dir} is a '{algo}' run")
                overrides["flights"] = str(args.flights)
            spec = resume_run_spec(run_dir, algo=args.algo, task_id=args.task,
                                   budget=budget if args.steps or args.minutes else None, algo_overrides=overrides)
        else:
            if not args.task:
                return _fail("train needs a task id (see `s2r tasks`), or --resume to continue a run")
            algo = args.algo or "ppo"
            cls = get_algorithm(algo)
            overrides = _kv(args.train_set)
            names = {f for f in getattr(cls.config_cls, "__dataclass_fields__", {})}
            for flag, key in _CONFIG_FLAGS:
                value = getattr(args, flag)
                if value is None:
                    continue
                if key not in names:
                    users = "/".join(_algos_with_field(key)) or "no algorithm"
                    return _fail(f"--{flag} is a setting of {users}, not of --algo {algo}")
                overrides[key] = value
            task_overrides = _kv(args.set)
            # `hil learner` and `train-bc` reuse this command with parsers of their own, without these flags.
            if getattr(args, "backend", None):
                task_overrides["backend.name"] = args.backend
            if getattr(args, "device", None):
                task_overrides["backend.device"] = args.device
            spec = new_run_spec(algo, args.task, task_overrides=task_overrides, algo_overrides=overrides,
                                num_envs=args.num_envs, seed=args.seed, budget=budget,
                                checkpoint_minutes=args.checkpoint_minutes)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            run_dir = Path(args.run_dir) if args.run_dir else Path(args.runs) / args.task.replace(":", "_") / f"{algo}_{stamp}"
        if dist is not None:  # rank 0's folder (its time stamp) for every rank
            run_dir = Path(str(distributed.broadcast_object(str(run_dir))))
        driver = RunDriver(spec, run_dir, resume=bool(args.resume), restart=args.restart, progress=not args.no_progress,
                           dist=dist)
        if dist is None or dist.is_main:
            print(f"s2r: {spec.algo} on {spec.task_id} -> {run_dir}"
                  + (f" (data-parallel, {dist.world_size} ranks over {dist.backend})" if dist else ""), flush=True)
        try:
            result = driver.learn()
        finally:
            driver.close()
    except (UnknownTaskError, UnknownAlgorithmError, AlgorithmTaskMismatch, ConfigError, CheckpointError,
            EpisodeFormatError, ExportError, FileNotFoundError, ValueError) as exc:
        return _fail(str(exc))
    except NonFiniteLossError as exc:
        return _fail(f"{exc} (the last good checkpoint is kept in {run_dir})", 1)
    finally:
        distributed.shutdown()
    if dist is not None and not dist.is_main:
        return 0
    print(json.dumps(result, default=str))
    teacher = (result.get("export") or {}).get("teacher_checkpoint") if isinstance(result.get("export"), dict) else None
    if teacher:  # a sim-only teacher has no ONNX file: its students load this
        print(f"s2r: exported {teacher} for `--algo distill` students (+ learning_curve.png; no ONNX: it reads "
              "privileged inputs)")
    else:
        print(f"s2r: exported {run_dir / 'policy.onnx'} (+ policy.json, learning_curve.png)")
    return 130 if result["interrupted"] else 0


def _algos_with_field(key: str) -> list[str]:
    from s2r.policies.algorithm import algorithm_ids, get_algorithm

    return [a for a in algorithm_ids() if key in getattr(get_algorithm(a).config_cls, "__dataclass_fields__", {})]


def cmd_algos(args: argparse.Namespace) -> int:
    from s2r.policies.algorithm import algorithm_ids, get_algorithm

    for aid in algorithm_ids():
        cls = get_algorithm(aid)
        print(f"{aid:10s} {cls.unit:10s} {cls.description}")
    return 0


def cmd_demos(args: argparse.Namespace) -> int:
    from s2r.policies.demos import collect_demos
    from s2r.real.episodes import EpisodeFormatError
    from s2r.sim import UnknownTaskError, canonical_task_id
    from s2r.sim.config import ConfigError

    args.task = canonical_task_id(args.task)
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
    """`s2r train-bc <task>`: the same as `s2r train <task> --algo bc`."""
    args.algo = "bc"
    for name, value in (("steps", None), ("minutes", None), ("num_envs", None), ("seed", None), ("resume", None),
                        ("restart", False), ("base", None), ("flights", None), ("checkpoint_minutes", 5.0)):
        setattr(args, name, getattr(args, name, value))
    if args.updates is not None:
        args.train_set = [*(args.train_set or []), f"updates={args.updates}"]
    return cmd_train(args)


def _latest_run(root: str, task: str | None) -> Path | None:
    """Newest run (by its config's time) of `task`, or of any task when `task` is None; with or without a checkpoint."""
    pattern = f"{task.replace(':', '_')}/*/config.json" if task else "*/*/config.json"
    configs = sorted(Path(root).glob(pattern), key=lambda p: max(p.stat().st_mtime, *(
        q.stat().st_mtime for q in p.parent.glob("checkpoint.pt"))))
    return configs[-1].parent if configs else None


# ---- eval / play / export -----------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    from s2r.policies.evaluate import evaluate, evaluate_straight, resolve_run
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
    out = res.as_dict()
    if not args.no_straight and _has_velocity_command(run):
        try:
            line = evaluate_straight(run, speed=args.straight_speed, distance_m=args.straight_distance,
                                     episodes=args.episodes, seed=args.seed, overrides=_kv(args.set))
        except (ValueError, ConfigError) as exc:
            return _fail(str(exc))
        print(f"straight line: {line.speed:g} m/s forward for {args.straight_distance:g} m, zero sideways and yaw command")
        print(f"  sideways drift           {line.mean_abs_lateral_m:.3f} m ({line.lateral_drift_pct:.1f} % of "
              f"{line.mean_forward_m:.2f} m walked)")
        print(f"  heading change           {line.mean_abs_heading_deg:.1f} deg")
        print(f"  lateral velocity error   {line.lateral_vel_error:.3f} m/s")
        print(f"  yaw rate error           {line.yaw_rate_error:.3f} rad/s")
        print(f"  forward velocity error   {line.forward_vel_error:.3f} m/s")
        if line.fall_rate:
            print(f"  fall rate                {line.fall_rate * 100:.1f} % (drift over the envs that stayed up)")
        out["straight"] = line.as_dict()
    if args.json:
        print(json.dumps(out))
    return 0


def _has_velocity_command(run: Path) -> bool:
    """Whether a run's policy takes a (vx, vy, wz) command and its task can report a planar pose."""
    from s2r.real.metadata import VelocityCommand, load_metadata
    from s2r.sim import get_task
    from s2r.sim.tasks.velocity import VelocityEnv

    meta = load_metadata(run / "policy.json")
    return isinstance(meta.command, VelocityCommand) and issubclass(get_task(meta.task_id).env_cls, VelocityEnv)


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
    from s2r.policies.driver import CheckpointError, export_run
    from s2r.policies.export import ExportError

    try:
        print(json.dumps(export_run(Path(args.run))))
    except (CheckpointError, ExportError, ValueError) as exc:
        return _fail(str(exc))
    return 0


# ---- deploy -------------------------------------------------------------------------------------


def _ros_module(name: str) -> Any:
    """s2r_ros.<name> from the sourced workspace or, not built/sourced, from the source tree beside this package."""
    import importlib

    try:
        return importlib.import_module(f"s2r_ros.{name}")
    except ImportError:
        tree = str(Path(__file__).resolve().parents[1] / "ros_ws" / "src" / "s2r_ros")
        if tree not in sys.path:
            sys.path.insert(0, tree)
        return importlib.import_module(f"s2r_ros.{name}")


def _ros_deploy() -> Any:
    """s2r_ros.deploy (stdlib + PyYAML; the nodes it starts import rclpy)."""
    return _ros_module("deploy")


def cmd_deploy(args: argparse.Namespace) -> int:
    return _ros_deploy().run_deploy(args)


def cmd_lifecycle(args: argparse.Namespace) -> int:
    return _ros_module("lifecycle_cli").run_lifecycle(args)


# ---- calibrate ----------------------------------------------------------------------------------


def cmd_calibrate(args: argparse.Namespace) -> int:
    from s2r.calibration.cli import run

    return run(args)


# ---- parser -------------------------------------------------------------------------------------


def cmd_sweep(args: argparse.Namespace) -> int:
    """`s2r sweep <task> --seeds ... --grid key=v1,v2`: every (setting, seed) as a run, scheduled by Ray."""
    from s2r.policies.algorithm import UnknownAlgorithmError
    from s2r.policies.sweep import SweepSpec, run_sweep
    from s2r.sim import UnknownTaskError, canonical_task_id
    from s2r.sim.config import ConfigError

    if args.steps is None and args.minutes is None:
        return _fail("sweep needs a budget per run: --steps or --minutes")
    try:
        import ray  # noqa: F401
    except ImportError:
        return _fail("s2r sweep needs Ray: pip install -e '.[scale]'")

    def grid(items: list[str] | None) -> dict[str, tuple[str, ...]]:
        return {k: tuple(v.split(",")) for k, v in _kv(items).items()}

    args.task = canonical_task_id(args.task)
    spec = SweepSpec(task_id=args.task, algo=args.algo, seeds=tuple(args.seeds), grid=grid(args.grid),
                     task_grid=grid(args.task_grid), steps=args.steps, minutes=args.minutes, num_envs=args.num_envs,
                     cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run, metric=args.metric)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path(args.runs) / args.task.replace(":", "_") / f"sweep_{stamp}"
    try:
        summary = run_sweep(spec, out, address=args.address)
    except (UnknownTaskError, UnknownAlgorithmError, ConfigError, ValueError) as exc:
        return _fail(str(exc))
    for row in summary["settings"]:
        print(f"{row['setting']:50s} {summary['metric']} {row['mean']:.4g} +- {row['std']:.2g} over seeds {row['seeds']}")
    print(f"s2r: wrote {out / 'sweep.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s2r", description="Train in MuJoCo, export ONNX, deploy with ROS 2.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("tasks", help="list registered tasks")
    t.set_defaults(func=cmd_tasks)

    t = sub.add_parser("algos", help="list registered algorithms")
    t.set_defaults(func=cmd_algos)

    t = sub.add_parser("train", help="train a policy headless and export it to ONNX (any algorithm, any task)")
    t.add_argument("task", nargs="?", help="task id (see `s2r tasks`), or gym:<gymnasium id>; optional with --resume")
    t.add_argument("--algo", help="algorithm id (see `s2r algos`; default ppo, or the resumed run's)")
    t.add_argument("--steps", type=int, help="budget in the algorithm's unit (env steps; updates for bc; rounds for mfrl)")
    t.add_argument("--minutes", type=float, help="wall-clock budget")
    t.add_argument("--num-envs", type=int, help="parallel envs")
    t.add_argument("--seed", type=int)
    t.add_argument("--resume", nargs="?", const="latest", metavar="RUN", help="continue a run (default: latest)")
    t.add_argument("--restart", action="store_true", help="with --resume: a run with no checkpoint and nothing durable "
                   "starts over with its config")
    t.add_argument("--checkpoint-minutes", type=float, default=5.0, help="also checkpoint this often (default 5)")
    t.add_argument("--runs", default="runs", help="root folder of runs (default runs/)")
    t.add_argument("--run-dir", help="exact run folder")
    t.add_argument("--set", action="append", metavar="KEY=VAL", help="task config override, e.g. rewards.feet_air_time=0.5")
    t.add_argument("--backend", help="physics backend: cpu (default) or warp (MuJoCo Warp, GPU; same as --set "
                   "backend.name=warp)")
    t.add_argument("--device", help="with --backend warp: the device the worlds, and for Go1-Velocity-Flat the whole "
                   "PPO loop, live on (cuda:0, cpu; default: the first GPU, else the CPU; same as --set backend.device=...)")
    t.add_argument("--train-set", action="append", metavar="KEY=VAL", help="algorithm override, e.g. algo.entropy_coef=0.01")
    t.add_argument("--base", metavar="RUN", help="behaviour-cloning run folder (--algo residual/finetune)")
    t.add_argument("--demos", metavar="DIR", help="episode folder (--algo bc; default demos/<task>)")
    t.add_argument("--flights", metavar="DIR", help="--algo mfrl: logged real flights (.mcap from the recorder, .csv "
                   "plan_id,t,x,y,z + plans.jsonl) added as the highest fidelity; with --resume RUN: into that run")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("demos", help="record scripted-expert demonstrations in the episode format")
    # A sub-command of its own, so `s2r demos collect --help` prints collect's options.
    dsub = d.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = dsub.add_parser("collect", help="run a task's scripted expert and write its episodes",
                        description="Run a task's scripted expert and write its episodes (the episode format).")
    t.add_argument("task", help="task id with a scripted expert (Panda-Lift-Cube, Panda-PickPlace-Cube, "
                   "Panda-Insert-Peg, Panda-Lift-FlatBox, Panda-Drawer-Cube and their variants)")
    t.add_argument("--n", type=int, default=50, help="episodes to record (default 50)")
    t.add_argument("--out", help="episode folder (default demos/<task>; appends if it exists)")
    t.add_argument("--noise", type=float, default=0.1, help="expert action-noise std (default 0.1)")
    t.add_argument("--failure-rate", type=float, default=0.0, help="fraction of episodes the expert fumbles")
    t.add_argument("--num-envs", type=int, default=8)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--set", action="append", metavar="KEY=VAL", help="task config override")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_demos)

    t = sub.add_parser("train-bc", help="behaviour cloning from recorded demos (same as train --algo bc)")
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
    t.add_argument("--straight-speed", type=float, default=0.5, metavar="M/S",
                   help="velocity tasks: forward speed of the straight-line drift check (default 0.5)")
    t.add_argument("--straight-distance", type=float, default=4.0, metavar="M",
                   help="velocity tasks: distance of the straight-line drift check (default 4)")
    t.add_argument("--no-straight", action="store_true", help="skip the straight-line drift check")
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

    t = sub.add_parser("sweep", help="many runs (settings x seeds) scheduled by Ray, locally or on a cluster")
    t.add_argument("task", help="task id (see `s2r tasks`)")
    t.add_argument("--algo", default="ppo", help="algorithm id (default ppo)")
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds per setting (default 0 1 2)")
    t.add_argument("--grid", action="append", metavar="KEY=V1,V2", help="algorithm setting values to sweep, e.g. "
                   "algo.learning_rate=1e-3,3e-4 (repeat for more keys: every combination runs)")
    t.add_argument("--task-grid", action="append", metavar="KEY=V1,V2", help="task setting values to sweep")
    t.add_argument("--steps", type=int, help="budget of each run in the algorithm's unit")
    t.add_argument("--minutes", type=float, help="wall-clock budget of each run")
    t.add_argument("--num-envs", type=int, help="envs per run")
    t.add_argument("--cpus-per-run", type=float, default=1.0, help="Ray CPUs per run (its torch/physics threads)")
    t.add_argument("--gpus-per-run", type=float, default=0.0, help="Ray GPUs per run")
    t.add_argument("--metric", default="mean_return", help="history key to rank settings by (default mean_return)")
    t.add_argument("--address", help="Ray cluster address (default: start Ray on this machine)")
    t.add_argument("--runs", default="runs", help="root folder of runs (default runs/)")
    t.add_argument("--out", help="sweep folder (default runs/<task>/sweep_<stamp>/)")
    t.set_defaults(func=cmd_sweep)

    from s2r.policies.hil_cli import add_parser as add_hil_parser

    add_hil_parser(sub)

    t = sub.add_parser("deploy", help="start a deployment manifest's ROS 2 nodes (e.g. policy + MuJoCo sim bridge)",
                       add_help=False)  # s2r_ros.deploy answers --help itself, with the manifest's arguments
    try:
        _ros_deploy().build_parser(t)
        t.set_defaults(func=cmd_deploy)
    except ImportError:
        # A wheel install has no ros_ws/ beside it; the other commands must still work.
        t.set_defaults(func=lambda _a: _fail("s2r deploy needs the s2r_ros package: `colcon build` ros_ws/ and "
                                             "source install/setup.sh, or run from a source checkout"))

    t = sub.add_parser("lifecycle", help="list and change a lifecycle node's state (what `ros2 lifecycle` does)",
                       description="List and change lifecycle nodes' states over their standard services "
                                   "(lifecycle_msgs GetState, GetAvailableTransitions, ChangeState); needs rclpy.")
    try:
        _ros_module("lifecycle_cli").build_parser(t)
        t.set_defaults(func=cmd_lifecycle)
    except ImportError:
        t.set_defaults(func=lambda _a: _fail("s2r lifecycle needs the s2r_ros package: `colcon build` ros_ws/ and "
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
