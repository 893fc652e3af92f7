"""The safety layer and control loop without ROS: clamps, NaN guard, watchdog, e-stop latch, counters."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
from s2r.real.controller import PolicyController
from s2r.real.robot import RobotConfig
from s2r.real.runner import PolicyRunner, RunnerConfig
from s2r.real.safety import Mode, SafetyConfig, SafetyLayer

DT = 0.02
UPRIGHT = np.array([1.0, 0.0, 0.0, 0.0])


class Loop:
    """Feeds a controller like a 50 Hz robot driver, with explicit clocks."""

    def __init__(self, policy: Path, robot: RobotConfig, **safety: float) -> None:
        self.ctl = PolicyController(PolicyRunner(policy, robot, RunnerConfig(ramp_s=0.1)),
                                    SafetyLayer(robot, SafetyConfig(**safety)))
        self.t = 0.0
        self.q = np.array([0.0, 0.9, -1.8] * 4) + 0.05

    def feed(self, joint: bool = True, imu: bool = True) -> np.ndarray | None:
        """One period: sensor messages in, the command out (or the timer's, if no step ran)."""
        self.t += DT
        if imu:
            self.ctl.on_imu(UPRIGHT, np.zeros(3), self.t, self.t)
        if joint and self.ctl.on_joint_state(self.q, np.zeros(12), self.t, self.t):
            return self.ctl.step(self.t)
        return self.ctl.tick(self.t)

    def counters(self) -> dict[str, int]:
        return self.ctl.safety.counters


def test_limit_clamps_position_delta_and_velocity(robot: RobotConfig) -> None:
    s = SafetyLayer(dataclasses.replace(robot, velocity_limit=(10.0,) * 12, max_target_delta=0.1))
    prev = np.array([0.0, 0.9, -1.8] * 4)
    out = s.limit(prev + 1.0, prev)  # velocity 10 rad/s * 20 ms = 0.2 rad, delta 0.1 rad: delta wins
    assert np.allclose(out, prev + 0.1)
    assert s.counters["clamp_delta"] == 1 and s.counters["clamp_velocity"] == 1
    out = s.limit(np.full(12, 9.0), None)  # no previous target: only the joint limits
    assert np.all(out <= s.upper) and s.counters["clamp_position"] == 1
    assert np.allclose(s.limit(prev + 0.01, prev), prev + 0.01)  # a small step passes untouched
    assert s.counters["clamp_delta"] == 1


def test_ramp_starts_at_the_measured_pose(graphs: dict[str, Path], robot: RobotConfig) -> None:
    loop = Loop(graphs["small"], robot)
    loop.ctl.activate(0.0)
    first = loop.feed()
    # Step 1 of a 5-step ramp: one fifth of the way from the measured pose to the policy's target.
    assert np.abs(first - loop.q).max() < 0.1
    for _ in range(6):
        loop.feed()
    assert loop.counters()["steps_ramp"] == 5 and loop.counters()["steps_run"] == 2


def test_nan_policy_never_reaches_the_command(graphs: dict[str, Path], robot: RobotConfig) -> None:
    loop = Loop(graphs["nan"], robot)
    loop.ctl.activate(0.0)
    outs = [loop.feed() for _ in range(10)]
    assert all(o is not None and np.isfinite(o).all() for o in outs)
    assert np.allclose(outs[-1], loop.q)  # damping: the measured pose
    assert loop.ctl.mode is Mode.FAULT and loop.counters()["nonfinite_action"] == 1
    assert loop.counters()["steps_fault"] == 10


def test_wrong_shape_at_run_time_is_a_fault(graphs: dict[str, Path], robot: RobotConfig) -> None:
    loop = Loop(graphs["dynamic_wide"], robot)
    loop.ctl.activate(0.0)
    out = loop.feed()
    assert out.shape == (12,) and np.allclose(out, loop.q)
    assert loop.counters()["bad_action_shape"] == 1 and loop.ctl.mode is Mode.FAULT


def test_watchdog_damps_stale_input_and_recovers(graphs: dict[str, Path], robot: RobotConfig) -> None:
    loop = Loop(graphs["small"], robot, watchdog_timeout_s=0.1)
    loop.ctl.activate(0.0)
    for _ in range(10):
        loop.feed()
    modes = []
    for _ in range(8):  # joint states stop; the IMU keeps coming
        out = loop.feed(joint=False)
        modes.append(loop.ctl.mode)
    # Tripped once the newest joint state is more than 100 ms old: on the 6th period without one.
    assert modes.index(Mode.DAMPING) == 5
    assert out is not None and np.allclose(out, loop.q)
    assert loop.counters()["watchdog_trips"] == 1
    loop.feed()
    assert loop.ctl.mode is Mode.RUN and loop.counters()["watchdog_recoveries"] == 1
    assert loop.ctl.runner.ramping  # back in through the ramp


def test_estop_latches_until_reset(graphs: dict[str, Path], robot: RobotConfig) -> None:
    loop = Loop(graphs["small"], robot)
    loop.ctl.activate(0.0)
    for _ in range(10):
        loop.feed()
    now = loop.ctl.on_estop(True)
    assert np.allclose(now, loop.q) and loop.ctl.mode is Mode.ESTOP  # returned at once, no waiting for a step
    assert not loop.ctl.reset()  # refused while pressed
    assert loop.counters()["reset_refused"] == 1
    loop.ctl.on_estop(False)
    for _ in range(20):  # released but not reset: still latched
        assert np.allclose(loop.feed(), loop.q)
    assert loop.ctl.mode is Mode.ESTOP
    assert loop.ctl.reset() and loop.ctl.mode is Mode.RUN
    loop.feed()
    assert loop.ctl.runner.ramping and loop.counters()["resets"] == 1 and loop.counters()["estop_triggers"] == 1


def test_command_timeout_and_nonfinite_input(graphs: dict[str, Path], robot: RobotConfig) -> None:
    loop = Loop(graphs["small"], robot, command_timeout_s=0.5)
    loop.ctl.activate(0.0)
    loop.ctl.on_command(0.5, 0.0, 0.0, 0.0)
    loop.feed()
    assert loop.ctl.command[0] == 0.5
    for _ in range(30):
        loop.feed()
    assert loop.ctl.command[0] == 0.0 and loop.counters()["command_timeouts"] == 1
    assert not loop.ctl.on_joint_state(np.full(12, np.nan), np.zeros(12), loop.t + DT, loop.t + DT)
    assert loop.counters()["nonfinite_input"] == 1


def test_decimation_and_missed_periods(graphs: dict[str, Path], robot: RobotConfig) -> None:
    loop = Loop(graphs["small"], robot)
    loop.ctl.activate(0.0)
    q, steps = loop.q, 0
    for k in range(100):  # 1 kHz joint states for a 50 Hz policy: every 20th is stepped
        t = k * 0.001
        loop.ctl.on_imu(UPRIGHT, np.zeros(3), t, t)
        if loop.ctl.on_joint_state(q, np.zeros(12), t, t):
            loop.ctl.step(t)
            steps += 1
    assert steps == 5
    t = 0.16  # states stopped at 0.099: the steps due at 0.10, 0.12 and 0.14 never ran
    loop.ctl.on_imu(UPRIGHT, np.zeros(3), t, t)
    assert loop.ctl.on_joint_state(q, np.zeros(12), t, t)
    loop.ctl.step(t)
    assert loop.counters()["missed_periods"] == 3


def test_decisions_are_logged(graphs: dict[str, Path], robot: RobotConfig, caplog: pytest.LogCaptureFixture) -> None:
    loop = Loop(graphs["nan"], robot)
    with caplog.at_level(logging.INFO, logger="s2r.real.safety"):
        loop.ctl.activate(0.0)
        for _ in range(3):
            loop.feed()
        loop.ctl.on_estop(True)
    text = caplog.text
    assert "mode inactive -> run" in text and "nonfinite_action" in text and "mode fault -> estop" in text


def test_latch_survives_deactivation(graphs: dict[str, Path], robot: RobotConfig) -> None:
    loop = Loop(graphs["small"], robot)
    loop.ctl.activate(0.0)
    loop.feed()
    loop.ctl.on_estop(True)
    loop.ctl.on_estop(False)
    loop.ctl.deactivate()
    loop.ctl.activate(loop.t)
    assert loop.ctl.mode is Mode.ESTOP  # deactivate/activate is no reset
    assert np.allclose(loop.feed(), loop.q)
    loop.ctl.deactivate()
    loop.ctl.on_estop(True)  # pressed while inactive: still latches
    loop.ctl.on_estop(False)
    assert loop.ctl.reset() and loop.ctl.mode is Mode.INACTIVE
    loop.ctl.activate(loop.t)
    assert loop.ctl.mode is Mode.RUN


def test_estop_at_a_joint_limit_damps_only(graphs: dict[str, Path], robot: RobotConfig,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """A joint past its limit is held where it is: the P term (kp * (target - q)) is zero on every joint."""
    loop = Loop(graphs["small"], robot)
    loop.ctl.activate(0.0)
    for _ in range(10):
        loop.feed()
    s = loop.ctl.safety
    loop.q = loop.q.copy()
    loop.q[2] = s.lower[2] - 0.05  # FR calf overshot its lower limit (a fall folded it)
    loop.q[4] = s.upper[4] + 0.02  # FL thigh past its upper limit
    loop.feed()  # the controller has measured them
    with caplog.at_level(logging.INFO, logger="s2r.real.safety"):
        held = loop.ctl.on_estop(True)
        after = loop.feed()
    kp = np.asarray(robot.kp)
    for target in (held, after):
        np.testing.assert_array_equal(target, loop.q)
        assert np.abs(kp * (target - loop.q)).max() == 0.0  # no position term pushes anywhere
    assert s.counters["hold_outside_limits"] == 2 and "held where it is" in caplog.text
    # The limits still bound what the policy asks for: after a reset the targets come back inside them.
    loop.ctl.on_estop(False)
    assert loop.ctl.reset()
    for _ in range(30):
        out = loop.feed()
        assert ((out >= s.lower) & (out <= s.upper)).all()
