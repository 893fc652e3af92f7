"""Closed loop through the ROS graph: `s2r deploy` starts the sim bridge and the policy node from
launch/sim.yaml; this test commands 0.5 m/s on /cmd_vel, activates the policy through its lifecycle
service and follows /odom for 10 s of simulated time.

With a walking policy at tests/data/go1_walk/ the robot must cover 3 m without falling. Without one, a
freshly exported (untrained) policy checks the plumbing: every period gets a command, nothing faults,
the run is recorded to a readable MCAP file, and lockstep runs repeat exactly.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from nav_msgs.msg import Odometry
from rclpy.node import Node

from tests.policy_files import WALK_DIR
from tests.ros.conftest import REPO, Ros, Spinner, wait_for
from tests.ros.driver import Driver

SIM_S = 10.0
RECORDED = ("/joint_states", "/forward_position_controller/commands")  # what check_recording counts in full
MIN_HEIGHT, MAX_TILT = 0.14, 1.0  # the training task's fall criteria


class Operator(Node):
    """Steers over /cmd_vel, activates the policy, and follows /odom and /diagnostics."""

    def __init__(self, context: object, vx: float) -> None:
        super().__init__("test_operator", context=context)
        self.twist = Twist()
        self.twist.linear.x = vx
        pub = self.create_publisher(Twist, "/cmd_vel", 10)
        self.create_timer(0.05, lambda: pub.publish(self.twist))
        self.odom: list[tuple[float, np.ndarray, np.ndarray]] = []  # (sim time, position, quat wxyz)
        self.create_subscription(Odometry, "/odom", self._on_odom, 1000)
        self.diag: dict[str, str] = {}
        self.create_subscription(DiagnosticArray, "/diagnostics",
                                 lambda m: self.diag.update({kv.key: kv.value for kv in m.status[0].values}), 10)
        self.change = self.create_client(ChangeState, "/policy/change_state")
        self.lock = threading.Lock()

    def _on_odom(self, m: Odometry) -> None:
        p, q = m.pose.pose.position, m.pose.pose.orientation
        with self.lock:
            self.odom.append((m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, np.array([p.x, p.y, p.z]),
                              np.array([q.w, q.x, q.y, q.z])))

    def at(self, t: float) -> tuple[float, np.ndarray, np.ndarray] | None:
        with self.lock:
            return next((o for o in self.odom if o[0] >= t - 1e-9), None)


def deploy(ros: Ros, policy: Path, tmp: Path, record: bool, lockstep: bool) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "s2r.policies.cli", "deploy", "--manifest", str(REPO / "launch" / "sim.yaml"),
           "--policy", str(policy), "--arg", "teleop=none", "--arg", f"lockstep={str(lockstep).lower()}",
           "--arg", "autostart=inactive",
           # Lockstep runs on simulated time; a busy CI machine must not trip the wall-clock watchdogs.
           "--set", "policy.watchdog_timeout_s=2.0", "--set", "policy.command_timeout_s=2.0",
           "--log-dir", str(tmp / "logs")]
    if record:
        cmd += ["--record", str(tmp / "run.mcap")]
    return subprocess.Popen(cmd, env=ros.env, cwd=tmp)


def drive(ros: Ros, policy: Path, tmp: Path, seconds: float, record: bool = False,
          lockstep: bool = True) -> tuple[Operator, int, float]:
    """One deployment: activate, run `seconds` of sim time at 0.5 m/s, stop.

    Returns the operator (odometry, diagnostics), the deployment's exit code and the sim time of activation.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    proc = deploy(ros, policy, tmp, record, lockstep)
    op = Operator(ros.context, vx=0.5)
    spinner = Spinner(ros.context, op)
    try:
        assert op.change.wait_for_service(30), "policy node never came up"
        wait_for(lambda: op.odom, 10, "odometry from the sim bridge")
        if record:  # the recorder matches topics as they appear; on a busy machine that can be after a short run
            log = tmp / "logs" / "recorder.log"
            wait_for(lambda: log.is_file() and all(f"recording {t}: matched" in log.read_text() for t in RECORDED), 30,
                     f"the recorder matched {RECORDED}")
        time.sleep(0.5)  # the command reaches the policy before its first step
        assert Driver.call(op.change, ChangeState.Request(transition=Transition(id=Transition.TRANSITION_ACTIVATE))).success
        t_act = op.odom[-1][0]  # lockstep: 0, the sim waited for the first command
        wait_for(lambda: op.at(t_act + seconds), 120, f"{seconds} s of simulated time")
        time.sleep(0.3)  # let diagnostics catch up
    finally:
        spinner.close()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    op.destroy_node()
    return op, code, t_act


def check_walk(op: Operator, t_act: float, walking: bool, lockstep: bool) -> None:
    """Distance and falls over SIM_S seconds after activation, and the safety layer's verdict."""
    t0, p0, _ = op.at(t_act)
    t1, p1, _ = op.at(t_act + SIM_S)
    run = [o for o in op.odom if t0 <= o[0] <= t1]
    heights = np.array([o[1][2] for o in run])
    tilt_cos = np.array([1 - 2 * (q[1] ** 2 + q[2] ** 2) for _, _, q in run])  # cos of the angle to vertical
    assert np.isfinite(heights).all()
    assert op.diag["mode"] == "run" and op.diag["steps_fault"] == "0" and op.diag["nonfinite_action"] == "0"
    if lockstep:  # every period stepped (in real time a busy machine may drop a state)
        assert int(op.diag["steps_run"]) + int(op.diag["steps_ramp"]) >= round(SIM_S / 0.02) - 1
        assert int(op.diag["missed_periods"]) == 0
    print(f"closed loop ({'walking' if walking else 'untrained'} policy): {p1[0] - p0[0]:.2f} m forward in "
          f"{t1 - t0:.2f} s, lowest base {heights.min():.3f} m, largest tilt {np.degrees(np.arccos(tilt_cos.min())):.1f} deg")
    if walking:
        assert p1[0] - p0[0] >= 3.0, f"walked {p1[0] - p0[0]:.2f} m in {SIM_S} s"
        assert heights.min() > MIN_HEIGHT and tilt_cos.min() > np.cos(MAX_TILT), "the robot fell"


def walk_policy(go1_policy: Path) -> tuple[Path, bool]:
    """The walking policy if someone has put one at tests/data/go1_walk/, else the untrained export."""
    walking = (WALK_DIR / "policy.onnx").is_file()
    return (WALK_DIR / "policy.onnx" if walking else go1_policy), walking


def test_closed_loop_forward_walk(ros: Ros, go1_policy: Path, tmp_path: Path) -> None:
    policy, walking = walk_policy(go1_policy)
    op, code, t_act = drive(ros, policy, tmp_path, SIM_S, record=True)
    assert code == 0, (tmp_path / "logs" / "policy.log").read_text()
    check_walk(op, t_act, walking, lockstep=True)
    check_recording(tmp_path / "run.mcap", t_act)


@pytest.mark.slow
def test_closed_loop_real_time(ros: Ros, go1_policy: Path, tmp_path: Path) -> None:
    """The default `s2r deploy` mode: the sim runs on the wall clock, as a robot would."""
    policy, walking = walk_policy(go1_policy)
    op, code, t_act = drive(ros, policy, tmp_path, SIM_S, lockstep=False)
    assert code == 0, (tmp_path / "logs" / "policy.log").read_text()
    check_walk(op, t_act, walking, lockstep=False)


def check_recording(path: Path, t_act: float) -> None:
    """The MCAP file carries ROS 2 schemas and CDR messages that a ROS 2 decoder reads back, every state and
    every command of the run among them (what happened before activation depends on when the recorder
    discovered the topics, so it is not counted)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with path.open("rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        summary = reader.get_summary()
        kinds = {c.topic: (summary.schemas[c.schema_id].name, summary.schemas[c.schema_id].encoding, c.message_encoding)
                 for c in summary.channels.values()}
        assert kinds["/joint_states"] == ("sensor_msgs/msg/JointState", "ros2msg", "cdr")
        assert kinds["/forward_position_controller/commands"][0] == "std_msgs/msg/Float64MultiArray"
        counts = {c.topic: summary.statistics.channel_message_counts.get(c.id, 0) for c in summary.channels.values()}
        steps = round(SIM_S / 0.02)
        assert counts["/forward_position_controller/commands"] >= steps - 1
        assert counts["/diagnostics"] > 0 and counts["/odom"] > 0
        msgs, stamps = {}, []
        for _, channel, _, ros_msg in reader.iter_decoded_messages(topics=["/joint_states", "/diagnostics"]):
            msgs.setdefault(channel.topic, ros_msg)
            if channel.topic == "/joint_states":
                stamps.append(ros_msg.header.stamp.sec + ros_msg.header.stamp.nanosec * 1e-9)
        in_run = {round(t, 6) for t in stamps if t_act - 1e-9 <= t <= t_act + SIM_S + 1e-9}
        missing = sorted({round(t_act + 0.02 * k, 6) for k in range(steps + 1)} - in_run)
        assert len(in_run) >= steps - 1, f"{len(in_run)} of the run's {steps} joint states were recorded; missing {missing[:40]}"
        assert len(msgs["/joint_states"].name) == 12
        assert any(kv.key == "mode" for kv in msgs["/diagnostics"].status[0].values)


def test_lockstep_runs_repeat_exactly(ros: Ros, go1_policy: Path, tmp_path: Path) -> None:
    ends = []
    for k in range(2):
        op, code, _ = drive(ros, go1_policy, tmp_path / f"run{k}", 2.0)
        assert code == 0
        ends.append(op.at(2.0))
    assert ends[0][0] == ends[1][0]
    assert np.array_equal(ends[0][1], ends[1][1]) and np.array_equal(ends[0][2], ends[1][2]), \
        f"lockstep runs differ: {ends[0][1]} vs {ends[1][1]}"

