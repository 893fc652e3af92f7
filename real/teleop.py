"""Teleop devices for human-in-the-loop runs: every device becomes the same `TeleopCommand`.

A device is read once per control step and answers with an end-effector delta + gripper command in the
policy's action units ([-1, 1] per axis, as the arm's `ee_delta_gripper` action kind), whether the operator
is taking over, and the episode buttons (success, failure, reset). All devices reduce to "axes + buttons"
and share one mapping (`AxesMapping`): deadzone, per-axis scale and sign, which button does what. That is
exactly what a `sensor_msgs/Joy` message carries, so a gamepad, a SpaceMouse and any Joy source behave alike.

Devices:

- `KeyboardDevice`: a terminal (no display): w/s x, a/d y, r/f z, g toggles the gripper, space toggles the
  takeover, y success, n failure, backspace/x reset. A key pressed moves for `key_hold_s`.
- `JoyDevice`: fed from `sensor_msgs/Joy` callbacks (the ROS node calls `feed`).
- `GamepadDevice`: pygame's joystick API (a USB/Bluetooth gamepad, no ROS needed).
- `SpaceMouseDevice`: 3Dconnexion SpaceMouse through `pyspacemouse` (6 axes, 2 buttons). Moving the puck
  takes over (as HIL-SERL), so one hand both intervenes and steers.

A device that goes quiet for `timeout_s` or raises reports `connected=False`; the intervention mixer ends
a takeover on that and holds the arm (`s2r.real.intervention`). No device here imports ROS, torch or a
simulator.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np


class TeleopError(RuntimeError):
    """A device cannot be opened or read; the message names the device and what to do."""


@dataclass(frozen=True, kw_only=True)
class TeleopCommand:
    """What the operator asks for on one control step.

    Attributes:
        action: (action_dim,) end-effector delta (x, y, z) + gripper in [-1, 1] (gripper +1 closes).
        intervene: The operator is in control this step.
        success: The success button is down (labels the episode a success and ends it).
        failure: The failure button is down (labels it a failure and ends it).
        reset: The reset button is down.
        connected: The device answered recently; False ends a takeover and holds the arm.
    """

    action: np.ndarray
    intervene: bool = False
    success: bool = False
    failure: bool = False
    reset: bool = False
    connected: bool = True


@dataclass(frozen=True, kw_only=True)
class AxesMapping:
    """How a device's axes and buttons become a `TeleopCommand` (indices into the device's arrays).

    Attributes:
        axes: Device axis for end-effector x, y, z (-1: unused).
        signs: Sign per end-effector axis (devices disagree on which way is up).
        scale: Action per unit deflection after the deadzone (actions are clipped to [-1, 1]).
        deadzone: |axis| below this reads as 0 (sticks and pucks never rest at exactly 0).
        button_intervene: Held (or toggled, see `toggle_intervene`) to take over; -1 for none.
        toggle_intervene: One press starts the takeover, the next ends it (keyboards); else held (gamepads).
        intervene_on_motion: Any axis beyond the deadzone takes over (SpaceMouse style).
        button_close, button_open: Gripper buttons; the gripper keeps its last command between presses.
        button_success, button_failure, button_reset: Episode buttons (-1: none).
    """

    axes: tuple[int, int, int] = (1, 0, 4)
    signs: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scale: float = 1.0
    deadzone: float = 0.05
    button_intervene: int = 5
    toggle_intervene: bool = False
    intervene_on_motion: bool = False
    button_close: int = 0
    button_open: int = 1
    button_success: int = 3
    button_failure: int = 2
    button_reset: int = 7

    def __post_init__(self) -> None:
        if not 0.0 <= self.deadzone < 1.0:
            raise ValueError(f"teleop deadzone must be in [0, 1), got {self.deadzone}")
        if self.scale <= 0:
            raise ValueError(f"teleop scale must be > 0, got {self.scale}")


class AxesToCommand:
    """Stateful mapping (the gripper and a toggled takeover remember their last state)."""

    def __init__(self, mapping: AxesMapping) -> None:
        self.m = mapping
        self.gripper = -1.0  # open until asked to close
        self.toggled = False
        self._prev_buttons: tuple[int, ...] = ()

    def __call__(self, axes: Sequence[float], buttons: Sequence[int], connected: bool = True) -> TeleopCommand:
        m = self.m
        ee = np.zeros(3)
        for k, (ax, sign) in enumerate(zip(m.axes, m.signs, strict=True)):
            if 0 <= ax < len(axes):
                v = float(axes[ax])
                if abs(v) >= m.deadzone:  # rescale so motion starts at 0 just past the deadzone
                    v = np.sign(v) * (abs(v) - m.deadzone) / (1.0 - m.deadzone)
                    ee[k] = sign * m.scale * v
        ee = np.clip(ee, -1.0, 1.0)

        def down(i: int) -> bool:
            return 0 <= i < len(buttons) and bool(buttons[i])

        def pressed(i: int) -> bool:  # rising edge
            return down(i) and not (0 <= i < len(self._prev_buttons) and self._prev_buttons[i])

        if pressed(m.button_close):
            self.gripper = 1.0
        if pressed(m.button_open):
            self.gripper = -1.0
        if m.toggle_intervene:
            if pressed(m.button_intervene):
                self.toggled = not self.toggled
            intervene = self.toggled
        else:
            intervene = down(m.button_intervene)
        if m.intervene_on_motion and np.any(ee != 0.0):
            intervene = True
        self._prev_buttons = tuple(int(b) for b in buttons)
        if not connected:
            self.toggled = False
            return TeleopCommand(action=np.array([0.0, 0.0, 0.0, self.gripper]), connected=False)
        return TeleopCommand(action=np.array([*ee, self.gripper]), intervene=intervene, success=down(m.button_success),
                             failure=down(m.button_failure), reset=down(m.button_reset))


class TeleopDevice(Protocol):
    """Anything read once per control step."""

    def read(self) -> TeleopCommand: ...

    def close(self) -> None: ...


class JoyDevice:
    """A `sensor_msgs/Joy` source: the ROS node calls `feed(axes, buttons)` from its subscription."""

    def __init__(self, mapping: AxesMapping = AxesMapping(), timeout_s: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.to_command = AxesToCommand(mapping)
        self.timeout_s = timeout_s
        self.clock = clock
        self._axes: tuple[float, ...] = ()
        self._buttons: tuple[int, ...] = ()
        self._stamp = -np.inf

    def feed(self, axes: Sequence[float], buttons: Sequence[int]) -> None:
        self._axes, self._buttons = tuple(axes), tuple(buttons)
        self._stamp = self.clock()

    def read(self) -> TeleopCommand:
        connected = self.clock() - self._stamp <= self.timeout_s
        return self.to_command(self._axes if connected else (), self._buttons if connected else (), connected)

    def close(self) -> None:
        pass


# Keyboard: which key moves which axis, and the buttons in the same index space as `AxesMapping`.
KEY_AXES = {"w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0)}
KEY_BUTTONS = {" ": 0, "y": 1, "n": 2, "x": 3, "\x7f": 3, "g": 4}
KEYBOARD_MAPPING = AxesMapping(axes=(0, 1, 2), deadzone=0.0, button_intervene=0, toggle_intervene=True,
                               button_success=1, button_failure=2, button_reset=3, button_close=-1, button_open=-1)


class KeyboardDevice:
    """Terminal keys (works over ssh, no display): reads raw bytes from `fd` without blocking.

    `fd` defaults to stdin; the terminal is in cbreak mode while open (restored by `close`). A key moves its axis for
    `key_hold_s` (terminals send repeats, not key-up events); `g` toggles the gripper.
    """

    def __init__(self, fd: int | None = None, key_hold_s: float = 0.15, scale: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fd = fd if fd is not None else 0
        if not os.isatty(self.fd):
            raise TeleopError("the keyboard teleop device needs a terminal on stdin; run it in a terminal, or use "
                              "another device (gamepad, spacemouse, a sensor_msgs/Joy source)")
        self.key_hold_s = key_hold_s
        self.clock = clock
        self.to_command = AxesToCommand(replace(KEYBOARD_MAPPING, scale=scale))
        self._until = np.full(3, -np.inf)
        self._sign = np.zeros(3)
        self._gripper_closed = False
        import termios
        import tty

        # cbreak: keys arrive one by one, not a line at a time; `close` puts the terminal back.
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)

    def read(self) -> TeleopCommand:
        buttons = [0] * 5
        while select.select([self.fd], [], [], 0)[0]:
            data = os.read(self.fd, 64)
            if not data:  # the terminal closed
                return self.to_command((), (), connected=False)
            now = self.clock()
            for ch in data.decode(errors="ignore").lower():
                if ch in KEY_AXES:
                    axis, sign = KEY_AXES[ch]
                    self._until[axis], self._sign[axis] = now + self.key_hold_s, sign
                elif ch in KEY_BUTTONS:
                    buttons[KEY_BUTTONS[ch]] = 1
        if buttons[4]:
            self._gripper_closed = not self._gripper_closed
        axes = np.where(self._until >= self.clock(), self._sign, 0.0)
        cmd = self.to_command(axes.tolist(), buttons[:4])
        grip = 1.0 if self._gripper_closed else -1.0
        return TeleopCommand(action=np.array([*cmd.action[:3], grip]), intervene=cmd.intervene, success=cmd.success,
                             failure=cmd.failure, reset=cmd.reset, connected=True)

    def close(self) -> None:
        if self._saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None


@dataclass(frozen=True, kw_only=True)
class PolledReading:
    """One poll of a USB device: axes, buttons, and whether it answered."""

    axes: tuple[float, ...] = ()
    buttons: tuple[int, ...] = ()
    ok: bool = True


class PolledDevice:
    """A device polled by a reader function (pygame gamepad, SpaceMouse); a raising reader = unplugged.

    A device that fails stays disconnected for this run's remaining reads until `reconnect` succeeds, so a
    flaky cable cannot hand control back and forth within a takeover.
    """

    def __init__(self, name: str, reader: Callable[[], PolledReading], mapping: AxesMapping,
                 reconnect: Callable[[], bool] | None = None) -> None:
        self.name = name
        self.reader = reader
        self.reconnect = reconnect
        self.to_command = AxesToCommand(mapping)
        self.connected = True
        self.last_error = ""

    def read(self) -> TeleopCommand:
        if not self.connected and self.reconnect is not None:
            self.connected = bool(self.reconnect())
        if self.connected:
            try:
                r = self.reader()
            except Exception as exc:  # any driver error means the device is gone
                self.last_error = f"{self.name}: {exc}"
                r = PolledReading(ok=False)
            self.connected = r.ok
            if r.ok:
                return self.to_command(r.axes, r.buttons)
        return self.to_command((), (), connected=False)

    def close(self) -> None:
        pass


# Gamepad (Xbox layout under SDL): left stick x/y, right stick y for z; LB/RB as in AxesMapping's defaults.
GAMEPAD_MAPPING = AxesMapping(axes=(1, 0, 4), signs=(-1.0, -1.0, -1.0), button_intervene=5, button_close=0,
                              button_open=1, button_success=3, button_failure=2, button_reset=7)
# SpaceMouse: axes x, y, z, roll, pitch, yaw; moving the puck takes over; left button toggles the gripper.
SPACEMOUSE_MAPPING = AxesMapping(axes=(1, 0, 2), signs=(1.0, -1.0, 1.0), deadzone=0.1, button_intervene=-1,
                                 intervene_on_motion=True, button_close=0, button_open=1, button_success=-1,
                                 button_failure=-1, button_reset=-1)


def open_gamepad(index: int = 0, mapping: AxesMapping = GAMEPAD_MAPPING) -> PolledDevice:
    """A USB/Bluetooth gamepad through pygame (`pip install pygame`); no window is opened."""
    try:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        import pygame
    except ImportError:
        raise TeleopError("the gamepad device needs pygame: pip install pygame") from None
    pygame.joystick.init()
    if pygame.joystick.get_count() <= index:
        raise TeleopError(f"no gamepad {index} found (pygame sees {pygame.joystick.get_count()}); plug one in or "
                          "pick another --device")
    pad = pygame.joystick.Joystick(index)

    def read() -> PolledReading:
        pygame.event.pump()
        if not pad.get_init():
            return PolledReading(ok=False)
        return PolledReading(axes=tuple(pad.get_axis(i) for i in range(pad.get_numaxes())),
                             buttons=tuple(pad.get_button(i) for i in range(pad.get_numbuttons())))

    return PolledDevice(f"gamepad {pad.get_name()}", read, mapping)


def open_spacemouse(mapping: AxesMapping = SPACEMOUSE_MAPPING) -> PolledDevice:
    """A 3Dconnexion SpaceMouse through `pyspacemouse` (`pip install pyspacemouse`, needs hidapi + udev rules).

    A reader that returns exactly zero on every axis for its first second is reported: on some USB
    receivers pyspacemouse reads the wrong HID report (hil-serl issue 40) and the operator could not steer.
    """
    try:
        import pyspacemouse
    except ImportError:
        raise TeleopError("the spacemouse device needs pyspacemouse: pip install pyspacemouse") from None
    if not pyspacemouse.open():
        raise TeleopError("no SpaceMouse opened; check that it is plugged in and that your user may read hidraw "
                          "(udev rule), then retry")

    def read() -> PolledReading:
        s = pyspacemouse.read()
        return PolledReading(axes=(s.x, s.y, s.z, s.roll, s.pitch, s.yaw), buttons=tuple(s.buttons))

    return PolledDevice("spacemouse", read, mapping, reconnect=lambda: bool(pyspacemouse.open()))


@dataclass
class DeviceRegistry:
    """Named device factories (`--device keyboard|gamepad|spacemouse`); unknown names list the known ones."""

    factories: dict[str, Callable[[], TeleopDevice]] = field(default_factory=dict)

    def open(self, name: str) -> TeleopDevice:
        if name not in self.factories:
            raise TeleopError(f"unknown teleop device '{name}'; choose one of: {', '.join(sorted(self.factories))}")
        return self.factories[name]()


DEVICES = DeviceRegistry({"keyboard": KeyboardDevice, "gamepad": open_gamepad, "spacemouse": open_spacemouse})
