"""`s2r hil learner` and `s2r hil actor`: the two halves of a human-in-the-loop run, on two computers or one.

    s2r hil learner Panda-Lift-Cube --bind 127.0.0.1:50051          # training computer
    s2r hil actor Panda-Lift-Cube --learner 127.0.0.1:50051         # robot computer (here: the simulator)

The learner is the `hil` algorithm with `link` set, so it has the run driver's folder, checkpoints,
TensorBoard, resume and export. The actor here drives the task in MuJoCo with the simulated operator or a
teleop device (keyboard, gamepad, SpaceMouse) and talks to the learner over `s2r.real.hil_link`; on a robot
the same `s2r.real.hil_actor.HilActor` sits behind the arm's ROS nodes instead of the simulator.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _fail(msg: str) -> int:
    print(f"s2r hil: {msg}", file=sys.stderr)
    return 2


def add_parser(sub: argparse._SubParsersAction) -> None:
    h = sub.add_parser("hil", help="human-in-the-loop RL: a learner and actors (robot or simulator) over gRPC")
    hsub = h.add_subparsers(dest="role", required=True, metavar="ROLE")

    t = hsub.add_parser("learner", help="serve actors and learn from their transitions (the `hil` algorithm, remote)")
    t.add_argument("task", nargs="?", help="task id (see `s2r tasks`); optional with --resume")
    t.add_argument("--bind", default="127.0.0.1:50051", help="host:port to listen on (default 127.0.0.1:50051; "
                   "another address needs the token in $S2R_HIL_TOKEN)")
    t.add_argument("--steps", type=int, help="stop after this many transitions received")
    t.add_argument("--minutes", type=float, help="wall-clock budget")
    t.add_argument("--seed", type=int)
    t.add_argument("--resume", nargs="?", const="latest", metavar="RUN", help="continue a learner run (default: latest)")
    t.add_argument("--runs", default="runs", help="root folder of runs (default runs/)")
    t.add_argument("--run-dir", help="exact run folder")
    t.add_argument("--demos", metavar="DIR", help="episode folder of demonstrations (default: collect 20 in sim)")
    t.add_argument("--train-set", action="append", metavar="KEY=VAL", help="hil setting, e.g. publish_every_s=4")
    t.add_argument("--checkpoint-minutes", type=float, default=5.0)
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_learner)

    t = hsub.add_parser("actor", help="act with the learner's newest weights; the operator may take over")
    t.add_argument("task", help="task id (the simulator stands in for the robot)")
    t.add_argument("--learner", required=True, metavar="HOST:PORT", help="the learner's address")
    t.add_argument("--operator", default="sim", help="sim (scripted expert), keyboard, gamepad or spacemouse")
    t.add_argument("--actor-id", default="actor0", help="this actor's name at the learner (one spool per name)")
    t.add_argument("--spool", help="spool folder kept across restarts (default spool/<actor-id>)")
    t.add_argument("--steps", type=int, default=10_000, help="control steps to run (default 10000)")
    t.add_argument("--rate-hz", type=float, default=0.0, help="pace the loop like the robot (0: as fast as possible)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the first weights (default 30)")
    t.add_argument("--flush", type=float, default=10.0, help="seconds to wait at the end for the learner to acknowledge "
                   "what is spooled (default 10); what is left stays in the spool for the next run")
    t.add_argument("--console", metavar="HOST:PORT", help="serve the operator console (live camera, rates, buttons) "
                   "here, e.g. 127.0.0.1:8080 (another host needs $S2R_CONSOLE_TOKEN)")
    t.add_argument("--classifier", metavar="ONNX", help="reward from this success classifier (`s2r hil classifier`) "
                   "instead of the simulator's success; the operator's buttons still win")
    t.set_defaults(func=cmd_actor)

    from s2r.policies.hil_label_cli import add_parsers as add_label_parsers

    add_label_parsers(hsub)


def cmd_learner(args: argparse.Namespace) -> int:
    from s2r.policies.cli import cmd_train

    for name, value in (("algo", "hil"), ("num_envs", None), ("restart", False), ("set", None), ("backend", None),
                        ("base", None), ("flights", None)):
        setattr(args, name, value)
    if not args.resume:
        args.train_set = [*(args.train_set or []), f"link={args.bind}"]
    return cmd_train(args)


def cmd_actor(args: argparse.Namespace) -> int:
    from s2r.real.hil_actor import HilActor
    from s2r.real.hil_link import HilActorLink
    from s2r.real.intervention import OperatorInput
    from s2r.real.reward_classifier import ClassifierError, RewardClassifier, classifier_reward
    from s2r.real.teleop import DEVICES, TeleopError
    from s2r.sim import UnknownTaskError, canonical_task_id, make, task_config
    from s2r.sim.operator import SimulatedOperator

    try:
        task = canonical_task_id(args.task)
        overrides: dict = {"image": True} if (args.console or args.classifier) else {}
        clf = None
        if args.classifier:
            clf = RewardClassifier.load(args.classifier, task=task, cameras=(task_config(task).image_camera,))
            if "image" in clf.inputs:  # render at the size the classifier was trained on
                overrides["image_size"] = tuple(clf.image_size)
        env = make(task, 1, cfg=task_config(task, overrides or None), seed=args.seed)
    except (UnknownTaskError, ClassifierError) as exc:
        return _fail(str(exc))
    if args.operator != "sim" and args.operator not in DEVICES.factories:
        return _fail(f"unknown --operator '{args.operator}'; choose sim, {', '.join(sorted(DEVICES.factories))}")
    device = None
    try:
        sim_op = SimulatedOperator(task, 1, seed=args.seed) if args.operator == "sim" else None
        if sim_op is None:
            device = DEVICES.open(args.operator)
    except (TeleopError, ValueError) as exc:
        env.close()
        return _fail(str(exc))
    spool = Path(args.spool or Path("spool") / args.actor_id)
    link = HilActorLink(args.learner, spool_dir=spool, actor_id=args.actor_id,
                        token=os.environ.get("S2R_HIL_TOKEN") or None)
    actor = HilActor(link, env.spec.action_dim)
    console = rates = None
    try:
        if args.console:
            from s2r.real.hil_console import EpisodeRates, OperatorConsole, with_console

            console = OperatorConsole(bind=args.console, token=os.environ.get("S2R_CONSOLE_TOKEN") or None)
            console.start()
            rates = EpisodeRates()
            print(f"s2r hil: operator console at {console.url}", file=sys.stderr, flush=True)
        deadline = time.monotonic() + args.wait
        while link.latest_weights() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if link.latest_weights() is None:
            print(f"s2r hil: no weights from {args.learner} after {args.wait:.0f} s; the operator drives until they come",
                  file=sys.stderr)
        obs = env.reset(seed=args.seed)
        if sim_op is not None:
            sim_op.reset()
        period = 1.0 / args.rate_hz if args.rate_hz > 0 else 0.0
        episodes = successes = 0
        next_t = time.monotonic()
        for _ in range(args.steps):
            proposal = actor.propose(obs["policy"][0])  # once per step: the operator judges what the actor runs
            op = sim_op(obs, proposal) if sim_op is not None else OperatorInput.from_command(device.read())
            if console is not None:
                c = console.read()
                if c.paused:
                    time.sleep(0.05)
                    continue
                op = with_console(op, c)
                console.publish_frame(obs["image"][0])
                rates.step(bool(op.intervene[0]))
            action = actor.act(obs["policy"][0], op, proposal)
            nxt, rew, term, trunc, info = env.step(action[None])
            reward, terminated, truncated = float(rew[0]), bool(term[0]), bool(trunc[0])
            final_obs = info.get("final_obs", nxt)
            if clf is not None:  # the classifier replaces the simulator's success; the buttons still win
                reward, terminated = classifier_reward(clf, bool(op.success[0]), bool(op.failure[0]),
                                                       image=final_obs["image"][0], state=final_obs["policy"][0])
                terminated = terminated or bool(term[0])
            elif op.success[0] or op.failure[0]:  # the operator's buttons win over the simulator
                reward, terminated = float(op.success[0]), True
            final = final_obs["policy"][0]
            actor.record(final, reward, terminated, truncated)
            if terminated or truncated or op.reset[0]:
                episodes += 1
                successes += int(reward > 0)
                if console is not None:
                    console.publish_stats(rates.end_episode(reward > 0))
                if not (term[0] or trunc[0]):
                    nxt = env.reset()
                if sim_op is not None:
                    sim_op.reset()
            obs = nxt
            if period:
                next_t += period
                time.sleep(max(0.0, next_t - time.monotonic()))
        link.flush(timeout_s=args.flush)
        s = link.stats()
        print(f"s2r hil actor: {actor.steps} steps, {episodes} episodes ({successes} successes), "
              f"{actor.mixer.takeovers} takeovers; sent {s.sent}, acknowledged {s.acked}, pending {s.pending}, "
              f"weights version {actor.weights.version}", file=sys.stderr)
        return 0
    finally:
        if console is not None:
            console.close()
        link.close()
        env.close()
        if device is not None:
            device.close()
