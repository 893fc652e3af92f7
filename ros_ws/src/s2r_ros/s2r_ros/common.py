"""What every s2r node shares: time stamps, joint-state mapping, QoS choices, logging and a clean main loop."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import Executor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions


def stamp_to_sec(stamp: Time) -> float:
    """builtin_interfaces/Time -> seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(t: float) -> Time:
    """Seconds -> builtin_interfaces/Time (rounded to the nanosecond)."""
    ns = round(t * 1e9)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def qos(reliability: str, depth: int = 10) -> QoSProfile:
    """A keep-last profile; "best_effort" matches every publisher, "reliable" loses nothing."""
    if reliability not in ("reliable", "best_effort"):
        raise ValueError(f"QoS reliability must be 'reliable' or 'best_effort', got '{reliability}'")
    rel = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=rel)


class JointStateMapper:
    """Reorders sensor_msgs/JointState arrays into the robot config's joint order.

    Drivers publish joints in their own order; the mapping is computed once per distinct name list.
    """

    def __init__(self, joint_names: Sequence[str]) -> None:
        self.joint_names = tuple(joint_names)
        self._names: list[str] | None = None
        self._index: np.ndarray | None = None

    def __call__(self, names: list[str], position: Sequence[float],
                 velocity: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | str:
        """(pos, vel) in robot order, or a one-sentence reason why the message cannot be used."""
        if names != self._names:
            lookup = {n: i for i, n in enumerate(names)}
            missing = [j for j in self.joint_names if j not in lookup]
            if missing:
                return f"joint state lacks joints {missing}"
            self._names = list(names)
            self._index = np.array([lookup[j] for j in self.joint_names])
        n = len(names)
        if len(position) != n or len(velocity) != n:
            return f"joint state has {len(position)} positions and {len(velocity)} velocities for {n} names"
        pos = np.frombuffer(position, dtype=np.float64) if not isinstance(position, list) else np.asarray(position)
        vel = np.frombuffer(velocity, dtype=np.float64) if not isinstance(velocity, list) else np.asarray(velocity)
        return pos[self._index], vel[self._index]


class RosLogHandler(logging.Handler):
    """Forwards Python `logging` records (from s2r.real) to a node's ROS logger."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self._log = node.get_logger()

    def emit(self, record: logging.LogRecord) -> None:
        msg = self.format(record)
        if record.levelno >= logging.ERROR:
            self._log.error(msg)
        elif record.levelno >= logging.WARNING:
            self._log.warning(msg)
        else:
            self._log.info(msg)


def declare_params(node: Node, params: dict[str, object]) -> dict[str, object]:
    """Declare parameters with defaults and return their values.

    Dynamic typing lets a manifest write `ramp_s: 1` for a float parameter; nodes convert values
    themselves.
    """
    any_type = ParameterDescriptor(dynamic_typing=True)
    for key, default in params.items():
        node.declare_parameter(key, default, any_type)
    return {k: node.get_parameter(k).value for k in params}


def stale_fastdds_shm() -> list[Path]:
    """Fast DDS shared-memory files in /dev/shm that no live process has mapped.

    Fast DDS leaves its segment and port files behind when a participant dies without cleaning up; they
    are only ever reused by number, so removing unmapped ones is safe.
    """
    shm = Path("/dev/shm")
    files = [p for p in shm.glob("*fast*") if "fastrtps" in p.name or "fastdds" in p.name] if shm.is_dir() else []
    used: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            used |= {line.rsplit(" ", 1)[-1] for line in maps.read_text().splitlines() if "/dev/shm/" in line}
        except OSError:  # the process ended while we looked
            continue
    return [p for p in files if str(p) not in used]


def make_executor(kind: str) -> Executor:
    """"events" (rclpy's EventsExecutor, about half the dispatch latency) or "single"."""
    if kind == "events":
        from rclpy.experimental import EventsExecutor

        return EventsExecutor()
    if kind == "single":
        return SingleThreadedExecutor()
    raise ValueError(f"executor must be 'events' or 'single', got '{kind}'")


def run(make_node: Callable[[], Node], args: list[str] | None = None,
        on_stop: Callable[[Node], None] | None = None) -> int:
    """Init rclpy, spin one node until SIGINT/SIGTERM, call `on_stop` while publishing still works, shut down.

    rclpy's own signal handler would shut the context down before a node could send a last safe-stop
    command, so the signals are handled here and only stop the spin loop.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = {"requested": False}

    def _request_stop(signum: int, frame: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    node = executor = None
    try:
        node = make_node()
        kind = node.get_parameter("executor").value if node.has_parameter("executor") else "events"
        executor = make_executor(str(kind))
        executor.add_node(node)
        while rclpy.ok() and not stop["requested"]:
            # A bounded wait: the signal handler only runs when control comes back to Python.
            executor.spin_once(timeout_sec=0.1)
        if on_stop is not None:
            on_stop(node)
    except (ValueError, OSError) as exc:  # bad parameters or files: one line, not a traceback
        logging.getLogger("s2r_ros").error(f"{exc}")
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
