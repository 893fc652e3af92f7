"""Teleop devices and intervention mixing: the mapping, a real pty keyboard, disconnects that hold the arm."""

from __future__ import annotations

import os
import pty

import numpy as np
import pytest
from s2r.real.intervention import InterventionMixer, OperatorInput
from s2r.real.teleop import (
    DEVICES,
    AxesMapping,
    AxesToCommand,
    JoyDevice,
    KeyboardDevice,
    PolledDevice,
    PolledReading,
    TeleopCommand,
    TeleopError,
)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_mapping_deadzone_scale_and_gripper_memory() -> None:
    m = AxesToCommand(AxesMapping(axes=(0, 1, -1), signs=(1.0, -1.0, 1.0), deadzone=0.1, scale=2.0,
                                  button_close=0, button_open=1, button_intervene=2))
    cmd = m([0.05, 0.55], [0, 0, 0])
    assert cmd.action[0] == 0.0  # inside the deadzone
    assert cmd.action[1] == pytest.approx(-1.0)  # (0.55-0.1)/0.9*2 = 1.0, sign flipped, clipped
    assert cmd.action[3] == -1.0 and not cmd.intervene
    cmd = m([0.0, 0.0], [1, 0, 1])
    assert cmd.action[3] == 1.0 and cmd.intervene
    cmd = m([0.0, 0.0], [0, 0, 0])  # gripper stays closed between presses, takeover ends with the button
    assert cmd.action[3] == 1.0 and not cmd.intervene


def test_bad_mapping_is_one_sentence() -> None:
    with pytest.raises(ValueError, match="deadzone"):
        AxesMapping(deadzone=1.5)
    with pytest.raises(TeleopError, match=r"unknown teleop device 'joystick'.*gamepad"):
        DEVICES.open("joystick")


def test_joy_source_goes_stale_and_disconnects() -> None:
    clock = Clock()
    joy = JoyDevice(AxesMapping(axes=(0, 1, 2), button_intervene=0), timeout_s=0.5, clock=clock)
    assert not joy.read().connected  # nothing received yet
    joy.feed([0.5, 0.0, 0.0], [1])
    cmd = joy.read()
    assert cmd.connected and cmd.intervene and cmd.action[0] > 0
    clock.t = 0.6
    cmd = joy.read()
    assert not cmd.connected and not cmd.intervene and np.all(cmd.action[:3] == 0)


def test_keyboard_over_a_real_pty() -> None:
    master, slave = pty.openpty()
    clock = Clock()
    try:
        kb = KeyboardDevice(fd=slave, clock=clock)
        assert not kb.read().intervene
        os.write(master, b" w")  # take over, move +x
        cmd = kb.read()
        assert cmd.intervene and cmd.action[0] == 1.0 and cmd.action[1] == 0.0
        clock.t = 1.0  # key released (no repeats arrived): motion stops, takeover stays toggled on
        cmd = kb.read()
        assert cmd.intervene and cmd.action[0] == 0.0
        os.write(master, b"gy")
        cmd = kb.read()
        assert cmd.action[3] == 1.0 and cmd.success
        os.write(master, b" ")
        assert not kb.read().intervene
        kb.close()
    finally:
        os.close(master)
        os.close(slave)


def test_keyboard_without_a_terminal_says_so(tmp_path) -> None:
    with open(tmp_path / "f", "w") as f, pytest.raises(TeleopError, match="needs a terminal"):
        KeyboardDevice(fd=f.fileno())


def test_polled_device_unplugged_reports_disconnected_until_reconnected() -> None:
    state = {"plugged": True, "reopen": False}

    def reader() -> PolledReading:
        if not state["plugged"]:
            raise OSError("device not found")
        return PolledReading(axes=(0.0, 0.8, 0.0), buttons=(0, 0, 0, 0, 0, 1))

    dev = PolledDevice("pad", reader, AxesMapping(axes=(1, 0, 2)), reconnect=lambda: state["reopen"])
    assert dev.read().intervene
    state["plugged"] = False
    cmd = dev.read()
    assert not cmd.connected and "device not found" in dev.last_error
    state["plugged"] = True  # back, but not reopened yet: still disconnected (no flapping mid-takeover)
    assert not dev.read().connected
    state["reopen"] = True
    assert dev.read().connected


def _op(action, intervene, connected=True) -> OperatorInput:
    return OperatorInput.from_command(TeleopCommand(action=np.asarray(action, float), intervene=intervene,
                                                    connected=connected))


def test_mixer_takeover_then_device_lost_holds_the_arm() -> None:
    mix = InterventionMixer(1, 4)
    policy = np.array([[0.3, 0.3, 0.3, -1.0]], np.float32)
    s = mix.step(policy, _op([0, 0, 0, 0], False))
    assert not s.intervened[0] and np.allclose(s.executed, policy)
    s = mix.step(policy, _op([1.0, 0, 0, 1.0], True))
    assert s.intervened[0] and s.started[0] and s.executed[0, 0] == 1.0
    s = mix.step(policy, _op([1.0, 0, 0, 1.0], True))
    assert s.intervened[0] and not s.started[0]
    # The device drops mid-takeover: no policy jump, no operator action: hold, gripper as last commanded.
    s = mix.step(policy, _op([0, 0, 0, -1.0], False, connected=False))
    assert s.held[0] and not s.intervened[0]
    assert np.allclose(s.executed, [[0, 0, 0, 1.0]])
    assert mix.device_losses == 1
    s = mix.step(policy, _op([0, 0, 0, -1.0], False, connected=True))  # back, but nobody took over: still held
    assert s.held[0] and np.allclose(s.executed, [[0, 0, 0, 1.0]])
    s = mix.step(policy, _op([0, 0.5, 0, 1.0], True))  # the operator takes over again: hold released
    assert not s.held[0] and s.intervened[0] and s.started[0]
    mix.reset()
    s = mix.step(policy, _op([0, 0, 0, 0], False))
    assert np.allclose(s.executed, policy)


def test_mixer_batches_envs_independently() -> None:
    mix = InterventionMixer(3, 2, gripper_index=None)
    pa = np.zeros((3, 2), np.float32)
    z = np.zeros(3, bool)
    op = OperatorInput(np.ones((3, 2), np.float32), np.array([True, False, True]), np.array([True, True, False]),
                       z, z, z)
    s = mix.step(pa, op)
    assert s.intervened.tolist() == [True, False, False]
    assert np.allclose(s.executed, [[1, 1], [0, 0], [0, 0]])
