"""`s2r deploy`: start a manifest's nodes as processes, the way `ros2 launch` would, without ROS's launch tools.

Each node runs as its own process with its parameters in a ROS params file. s2r_ros nodes start as
`python -m s2r_ros.<executable>` (from this package, built or not); other packages' executables are
looked up under AMENT_PREFIX_PATH as `ros2 run` does. Nodes stop in reverse start order on Ctrl-C or
after `--duration`, so the policy's safe stop still reaches the robot and the recorder sees it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from s2r_ros.manifest import ManifestError, NodeSpec, describe_arguments, load_manifest, node_list

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # folder holding the s2r_ros package


class DeployError(RuntimeError):
    """A node cannot be started."""


def _executable(spec: NodeSpec, python: str) -> list[str]:
    if spec.package == "s2r_ros":
        return [python, "-m", f"s2r_ros.{spec.executable}"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        exe = Path(prefix) / "lib" / spec.package / spec.executable
        if prefix and exe.is_file() and os.access(exe, os.X_OK):
            return [str(exe)]
    raise DeployError(f"node '{spec.name}': executable '{spec.executable}' of package '{spec.package}' not found "
                      "under AMENT_PREFIX_PATH; source its ROS workspace or disable the node in the manifest")


def node_command(spec: NodeSpec, params_file: Path, python: str = sys.executable) -> list[str]:
    """The command line that starts one node with its parameters."""
    cmd = [*_executable(spec, python), "--ros-args", "-r", f"__node:={spec.name}", "--params-file", str(params_file)]
    if spec.namespace:
        cmd += ["-r", f"__ns:={spec.namespace}"]
    return cmd


def params_document(nodes: list[NodeSpec]) -> dict[str, Any]:
    """A ROS 2 params file: node name -> ros__parameters."""
    doc = {}
    for n in nodes:
        fq = f"/{n.namespace.strip('/')}/{n.name}" if n.namespace else f"/{n.name}"
        doc[fq] = {"ros__parameters": n.parameters}
    return doc


class Deployment:
    """Running node processes. Use as a context manager: `with Deployment(nodes) as d: d.wait(10)`.

    Args:
        nodes: Nodes to start, in order.
        log_dir: Each node's output goes to `<log_dir>/<name>.log`; None lets it through to this terminal.
        env: Extra environment variables for the nodes.
        stdin_node: The node that may read this terminal (keyboard teleop); the others get no stdin.
    """

    def __init__(self, nodes: list[NodeSpec], log_dir: Path | None = None, env: dict[str, str] | None = None,
                 stdin_node: str | None = None) -> None:
        self.nodes = nodes
        self.log_dir = Path(log_dir) if log_dir else None
        self.env = {**os.environ, **(env or {})}
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), self.env.get("PYTHONPATH")) if p)
        # A laptop simulation should not discover robots on the network; export the variable to override.
        self.env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.stdin_node = stdin_node
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="s2r_deploy_")
        self._logs: list[Any] = []

    def start(self) -> None:
        """Write the params file and start every node."""
        params = Path(self._tmp.name) / "params.yaml"
        params.write_text(yaml.safe_dump(params_document(self.nodes), sort_keys=False))
        cmds = {n.name: node_command(n, params) for n in self.nodes}  # fail before starting anything
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        for n in self.nodes:
            out = None
            if self.log_dir:
                out = open(self.log_dir / f"{n.name}.log", "wb")  # noqa: SIM115 - closed in stop()
                self._logs.append(out)
            self.procs[n.name] = subprocess.Popen(
                cmds[n.name], env=self.env, stdout=out, stderr=subprocess.STDOUT if out else None,
                stdin=None if n.name == self.stdin_node else subprocess.DEVNULL,
                start_new_session=True)  # Ctrl-C reaches only this process, which stops nodes in order

    def failed(self) -> list[str]:
        """Names of nodes that have exited."""
        return [name for name, p in self.procs.items() if p.poll() is not None]

    def wait(self, duration: float | None = None) -> list[str]:
        """Block until `duration` passes (None: forever), Ctrl-C, or a node exits; returns exited nodes."""
        end = None if duration is None else time.monotonic() + duration
        while end is None or time.monotonic() < end:
            dead = self.failed()
            if dead:
                return dead
            time.sleep(0.1)
        return []

    def stop(self, timeout: float = 5.0) -> dict[str, int]:
        """Stop nodes in reverse start order (SIGINT, then SIGTERM, then SIGKILL); returns exit codes."""
        codes = {}
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
                if p.poll() is not None:
                    break
                p.send_signal(sig)
                try:
                    p.wait(wait)
                except subprocess.TimeoutExpired:
                    continue
            codes[name] = p.returncode
        for f in self._logs:
            f.close()
        self._tmp.cleanup()
        return codes

    def __enter__(self) -> Deployment:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def recorder_spec(path: str | Path, topics: tuple[str, ...]) -> NodeSpec:
    """The node `--record` adds."""
    return NodeSpec(name="recorder", package="s2r_ros", executable="recorder_node",
                    parameters={"path": str(Path(path).resolve()), "topics": list(topics)})


def keyboard_fallback(nodes: list[NodeSpec], stdin_is_tty: bool) -> tuple[list[NodeSpec], str | None]:
    """Leave out keyboard teleop when there is no terminal to read (teleop falls back to none).

    Without a terminal the keyboard node could only publish zero velocity, competing on /cmd_vel with any
    other command source, so it is not started.

    Returns:
        The nodes to start, and the log line saying what was left out (None when nothing was).
    """
    keyboard = [n.name for n in nodes if n.parameters.get("source") == "keyboard"]
    if not keyboard or stdin_is_tty:
        return nodes, None
    return ([n for n in nodes if n.name not in keyboard],
            f"no terminal on stdin, so keyboard teleop ({', '.join(keyboard)}) is not started: teleop falls back to "
            "none (nothing else publishes /cmd_vel); choose with --arg teleop=joy or teleop=none")


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Flags of `s2r deploy` (shared with the `s2r_deploy` entry point)."""
    p = p or argparse.ArgumentParser(prog="s2r_deploy", description=__doc__.splitlines()[0], add_help=False)
    # -h/--help is answered in run_deploy, once --manifest is known, so it can list that manifest's arguments.
    # The caller builds `p` with add_help=False.
    p.add_argument("-h", "--help", action="store_true", help="show this help (with --manifest: and its arguments)")
    p.add_argument("--manifest", help="deployment manifest, e.g. launch/sim.yaml (required)")
    p.add_argument("--policy", help="exported policy.onnx (sets the manifest argument 'policy')")
    p.add_argument("--robot", help="robot config YAML (sets the manifest argument 'robot')")
    p.add_argument("--arg", action="append", metavar="NAME=VALUE", help="manifest argument, e.g. teleop=joy")
    p.add_argument("--set", action="append", metavar="NODE.PARAM=VALUE", help="node parameter, e.g. policy.ramp_s=2")
    p.add_argument("--record", metavar="FILE.mcap", help="record the manifest's record_topics to MCAP")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--log-dir", help="write each node's output to LOG_DIR/<node>.log")
    p.add_argument("--dry-run", action="store_true", help="print the node commands and parameters, start nothing")
    p.set_defaults(deploy_parser=p)
    return p


def deploy_help(parser: argparse.ArgumentParser, manifest: str | None) -> str:
    """`s2r deploy --help`: the flags, then the arguments of `manifest` when one is given."""
    text = parser.format_help()
    if manifest is None:
        return text + "\nGive --manifest FILE with --help to list that manifest's arguments.\n"
    return f"{text}\n{describe_arguments(load_manifest(manifest))}\n"


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        # Accept ros2 launch's `key:=value` as well as `key=value`.
        key, sep, value = item.partition(":=") if ":=" in item else item.partition("=")
        if not sep:
            raise ManifestError(f"{flag} wants KEY=VALUE, got '{item}'")
        out[key.strip()] = value.strip()
    return out


def run_deploy(args: argparse.Namespace) -> int:
    """Start the nodes of `args.manifest`; returns a process exit code."""
    try:
        if args.help:
            print(deploy_help(args.deploy_parser, args.manifest), end="")
            return 0
        if not args.manifest:
            raise ManifestError("--manifest is required, e.g. --manifest launch/sim.yaml (see launch/*.yaml)")
        manifest = load_manifest(args.manifest)
        margs = _pairs(args.arg, "--arg")
        for key in ("policy", "robot"):
            if getattr(args, key):
                margs[key] = str(Path(getattr(args, key)).resolve())
        nodes = node_list(manifest, margs, _pairs(args.set, "--set"))
        nodes, fallback = keyboard_fallback(nodes, sys.stdin is not None and sys.stdin.isatty())
        if fallback:
            print(f"s2r deploy: {fallback}", file=sys.stderr, flush=True)
        if args.record:
            nodes.insert(0, recorder_spec(args.record, manifest.record_topics))
        if args.dry_run:
            for n in nodes:
                print(" ".join(node_command(n, Path("params.yaml"))))
            print(yaml.safe_dump(params_document(nodes), sort_keys=False))
            return 0
        if importlib.util.find_spec("rclpy") is None:
            raise DeployError("rclpy is not installed: pip install -e .[ros], or source a ROS 2 installation")
        keyboard = next((n.name for n in nodes if n.parameters.get("source") == "keyboard"), None)
        deployment = Deployment(nodes, Path(args.log_dir) if args.log_dir else None, stdin_node=keyboard)
        deployment.start()
    except (ManifestError, DeployError) as exc:
        print(f"s2r deploy: error: {exc}", file=sys.stderr)
        return 2
    print(f"s2r deploy: {manifest.name}: started {', '.join(f'{n.name} (pid {deployment.procs[n.name].pid})' for n in nodes)}",
          flush=True)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    dead: list[str] = []
    try:
        end = None if args.duration is None else time.monotonic() + args.duration
        while not stop["now"] and (end is None or time.monotonic() < end):
            dead = deployment.wait(0.2)
            if dead:
                break
    except KeyboardInterrupt:
        pass
    codes = deployment.stop()
    if dead:
        print(f"s2r deploy: node(s) {dead} exited early (codes {[codes[d] for d in dead]}); stopped the rest",
              file=sys.stderr)
        return 1
    print(f"s2r deploy: stopped ({codes})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `s2r_deploy` (same flags as `s2r deploy`)."""
    return run_deploy(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
