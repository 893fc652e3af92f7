"""Joint logs for actuator identification: read and check CSV or MCAP, write them back.

A log holds, per joint, the commanded target and the measured position, and where the robot reports them,
velocity and torque (effort), sampled at a steady rate.

CSV: a header `t,<joint>.target,<joint>.q,<joint>.qd,<joint>.tau,...` (seconds, rad, rad/s, Nm; qd and
tau optional, per joint all or none). `s2r calibrate excite` writes `t` and the `.target` columns; the
robot's logger adds the measured ones.

MCAP (rosbag2's default, and what `s2r deploy --record` writes): sensor_msgs/JointState on the state topic
(name, position, velocity, effort) and the commands either as std_msgs/Float64MultiArray (a ros2_control
forward command controller, `/forward_position_controller/commands` by default; values in the order of the
state topic's names) or as sensor_msgs/JointState (names + position). Commands are held until the next one
(zero-order hold) and sampled at the state times. Messages are timed by their header stamps when both
topics have them, else by the recorder's receive time.
"""

from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from s2r.calibration import rosmsg
from s2r.calibration.schema import CalibrationError


@dataclass(frozen=True)
class JointLog:
    """A uniformly sampled joint log.

    Attributes:
        source: File it came from (named in messages).
        joints: Joint names, one per column.
        t: (n,) seconds, uniform.
        target: (n, j) commanded positions.
        q: (n, j) measured positions.
        qd: (n, j) measured velocities, or None.
        tau: (n, j) measured torques, or None.
    """

    source: str
    joints: tuple[str, ...]
    t: np.ndarray
    target: np.ndarray
    q: np.ndarray
    qd: np.ndarray | None = None
    tau: np.ndarray | None = None

    @property
    def dt(self) -> float:
        return float(np.median(np.diff(self.t)))

    def window(self, start: float | None = None, end: float | None = None) -> JointLog:
        """The part between `start` and `end` seconds (log time)."""
        m = np.ones(len(self.t), bool)
        if start is not None:
            m &= self.t >= start
        if end is not None:
            m &= self.t <= end
        if m.sum() < 10:
            raise CalibrationError(f"{self.source}: the window {start}..{end} s holds {int(m.sum())} samples; the log runs "
                                   f"{self.t[0]:.3f}..{self.t[-1]:.3f} s")
        return replace(self, t=self.t[m], target=self.target[m], q=self.q[m],
                       qd=None if self.qd is None else self.qd[m], tau=None if self.tau is None else self.tau[m])


def read_log(path: str | Path, *, start: float | None = None, end: float | None = None,
             state_topic: str = "/joint_states", command_topic: str = "/forward_position_controller/commands",
             max_gap_factor: float = 1.5) -> JointLog:
    """Read a CSV or MCAP joint log, cut it to [start, end], check it and resample it to a uniform grid.

    Raises:
        CalibrationError: Missing file, unknown format, missing columns or topics, mismatched joint names between
            commands and states, non-finite values, time running backwards, or gaps (a sample interval more than
            `max_gap_factor` times the median); each message names the file and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: no such log file; record the excitation from `s2r calibrate excite` on the robot "
                               "and pass the CSV or MCAP it wrote")
    if path.suffix.lower() == ".csv":
        t, names, cols = _read_csv(path)
    elif path.suffix.lower() == ".mcap":
        t, names, cols = _read_mcap(path, state_topic, command_topic)
    else:
        raise CalibrationError(f"{path}: unknown log format '{path.suffix}'; use .csv or .mcap")
    if start is not None or end is not None:
        eps = 1e-9  # stamps converted from nanoseconds: 1.9 s may read 1.9000000000000001
        m = (t >= (start - eps if start is not None else -np.inf)) & (t <= (end + eps if end is not None else np.inf))
        t = t[m]
        cols = {k: v[m] for k, v in cols.items()}
    if len(t) < 50:
        raise CalibrationError(f"{path}: only {len(t)} samples{' in the chosen window' if start or end else ''}; "
                               "identification needs a few seconds of excitation (see `s2r calibrate excite`)")
    for k, v in cols.items():
        bad = ~np.isfinite(v)
        if bad.any():
            i = int(np.argwhere(bad)[0, 0])
            raise CalibrationError(f"{path}: '{k}' has a non-finite value at t={t[i]:.4f} s; cut it out with --start/--end "
                                   "or re-record")
    dt = np.diff(t)
    if (dt <= 0).any():
        i = int(np.argmax(dt <= 0))
        raise CalibrationError(f"{path}: time does not increase at t={t[i]:.4f} s (sample {i + 1}); sort the log by time "
                               "and drop duplicated samples")
    med = float(np.median(dt))
    gaps = np.flatnonzero(dt > max_gap_factor * med)
    if len(gaps):
        g = gaps[np.argmax(dt[gaps])]
        raise CalibrationError(
            f"{path}: the log has {len(gaps)} gap(s); the largest is {1000 * dt[g]:.1f} ms at t={t[g]:.3f} s while samples "
            f"come every {1000 * med:.2f} ms elsewhere. Identification replays the log as one continuous trajectory: "
            f"re-record without dropped samples, or pass --start/--end to use a gap-free part (e.g. --end {t[g]:.3f})")
    # Small timing jitter: resample onto an exact grid (linear for measurements, hold for commands).
    grid = t[0] + med * np.arange(round((t[-1] - t[0]) / med) + 1)
    grid = grid[grid <= t[-1] + 1e-9]

    def lin(v: np.ndarray) -> np.ndarray:
        return np.stack([np.interp(grid, t, v[:, j]) for j in range(v.shape[1])], axis=1)

    idx = np.clip(np.searchsorted(t, grid + 1e-9 * med, side="right") - 1, 0, len(t) - 1)
    return JointLog(source=str(path), joints=tuple(names), t=grid - grid[0], target=cols["target"][idx], q=lin(cols["q"]),
                    qd=lin(cols["qd"]) if "qd" in cols else None, tau=lin(cols["tau"]) if "tau" in cols else None)


def _read_csv(path: Path) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    with path.open(newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise CalibrationError(f"{path}: empty file") from None
        rows = [r for r in reader if r]
    if not header or header[0] != "t":
        raise CalibrationError(f"{path}: the first column must be 't' (seconds); header is {header[:4]}...")
    fields: dict[str, dict[str, int]] = {}
    for i, h in enumerate(header[1:], start=1):
        joint, _, kind = h.rpartition(".")
        if kind not in ("target", "q", "qd", "tau") or not joint:
            raise CalibrationError(f"{path}: column '{h}' is not '<joint>.target|q|qd|tau'; rename or drop it")
        fields.setdefault(joint, {})[kind] = i
    names = list(fields)
    for j in names:
        missing = [k for k in ("target", "q") if k not in fields[j]]
        if missing:
            raise CalibrationError(f"{path}: joint '{j}' has no {' or '.join(f'{j}.{k}' for k in missing)} column; every "
                                   "joint needs its target and measured position")
    try:
        data = np.array([[float(v) for v in r] for r in rows])
    except ValueError as exc:
        raise CalibrationError(f"{path}: a value is not a number ({exc})") from None
    if data.ndim != 2 or data.shape[1] != len(header):
        raise CalibrationError(f"{path}: rows have different numbers of columns than the header ({len(header)})")
    cols: dict[str, np.ndarray] = {}
    for kind in ("target", "q", "qd", "tau"):
        have = [kind in fields[j] for j in names]
        if all(have):
            cols[kind] = data[:, [fields[j][kind] for j in names]]
        elif any(have):
            raise CalibrationError(f"{path}: '{kind}' columns exist for some joints but not for "
                                   f"{[j for j, h in zip(names, have, strict=True) if not h]}; give all or none")
    return data[:, 0], names, cols


def _read_mcap(path: Path, state_topic: str, command_topic: str) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    states, commands = [], []
    with path.open("rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        summary = reader.get_summary()
        chans = {c.topic: summary.schemas[c.schema_id].name for c in summary.channels.values()} if summary else {}
        for topic, what in ((state_topic, "--state-topic"), (command_topic, "--command-topic")):
            if chans and topic not in chans:
                raise CalibrationError(f"{path}: has no topic '{topic}' (topics: {sorted(chans)}); pass the right one with "
                                       f"{what}")
        if chans.get(state_topic) not in (None, "sensor_msgs/msg/JointState"):
            raise CalibrationError(f"{path}: '{state_topic}' carries {chans[state_topic]}, not sensor_msgs/msg/JointState")
        msgs = [(ch.topic, raw.log_time, m) for _s, ch, raw, m in reader.iter_decoded_messages(topics=[state_topic,
                                                                                                     command_topic])]
    # Header stamps when both topics carry them; otherwise (a Float64MultiArray command has no header) the
    # recorder's receive time for both, so the two topics are never timed by different clocks. Integer
    # nanoseconds: epoch seconds as a float blur to ~0.1 us and could reorder a command and its state.
    stamped = all(hasattr(m, "header") and (m.header.stamp.sec or m.header.stamp.nanosec) for _t, _l, m in msgs)
    for topic, log_time, m in msgs:
        stamp = m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec if stamped else log_time
        (states if topic == state_topic else commands).append((stamp, m))
    if not states or not commands:
        raise CalibrationError(f"{path}: no messages on '{state_topic if not states else command_topic}'; record both the "
                               "joint states and the commands")
    names = list(states[0][1].name)
    t_first = states[0][0]
    for t, m in states:
        if list(m.name) != names:
            raise CalibrationError(f"{path}: '{state_topic}' changes its joint names at t={(t - t_first) * 1e-9:.3f} s "
                                   f"({list(m.name)} after {names}); log one fixed set of joints")
    if hasattr(commands[0][1], "name"):
        cnames = list(commands[0][1].name)
        if sorted(cnames) != sorted(names):
            raise CalibrationError(
                f"{path}: command joints {cnames} do not match state joints {names} "
                f"(only in commands: {sorted(set(cnames) - set(names))}, only in states: {sorted(set(names) - set(cnames))}); "
                "log commands and states for the same joints")
        order = [cnames.index(n) for n in names]
        cmd = np.array([np.asarray(m.position, float)[order] for _, m in commands])
    else:
        cmd = np.array([np.asarray(m.data, float) for _, m in commands])
        if cmd.shape[1] != len(names):
            raise CalibrationError(f"{path}: '{command_topic}' carries {cmd.shape[1]} values but '{state_topic}' names "
                                   f"{len(names)} joints; the forward command controller's joints must be the logged ones")
    t_state = np.array([t for t, _ in states], dtype=np.int64)
    t_cmd = np.array([t for t, _ in commands], dtype=np.int64)
    cols: dict[str, np.ndarray] = {"q": np.array([m.position for _, m in states], float)}
    for key, attr in (("qd", "velocity"), ("tau", "effort")):
        if all(len(getattr(m, attr)) == len(names) for _, m in states):
            cols[key] = np.array([getattr(m, attr) for _, m in states], float)
    # Commands onto state times by zero-order hold: the target in force when each state was measured.
    idx = np.searchsorted(t_cmd, t_state, side="right") - 1
    first = int(np.argmax(idx >= 0))
    if (idx < 0).all():
        raise CalibrationError(f"{path}: every command comes after the last state; check the clocks of both topics")
    keep = slice(first, None)
    cols = {k: v[keep] for k, v in cols.items()}
    cols["target"] = cmd[idx[keep]]
    return (t_state[keep] - t_state[keep][0]) * 1e-9, names, cols


def check_joint_names(log: JointLog, known: list[str], model: str) -> None:
    """Raise a clear error when the log's joints are not the model's."""
    unknown = [j for j in log.joints if j not in known]
    if unknown:
        hints = []
        for j in unknown[:4]:
            close = difflib.get_close_matches(j, known, n=1, cutoff=0.5)
            hints.append(f"'{j}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise CalibrationError(
            f"{log.source}: joint(s) {', '.join(hints)} are not in model {model}, whose actuated joints are {known}. "
            "Rename the log's joints to the model's names (CSV columns '<joint>.q', or JointState names), or pass "
            "--model for the robot that was logged")
    dup = {j for j in log.joints if log.joints.count(j) > 1}
    if dup:
        raise CalibrationError(f"{log.source}: joint(s) {sorted(dup)} appear more than once; log each joint once")


# ---- writing ---------------------------------------------------------------------------------------------


def write_csv_log(log: JointLog, path: str | Path, *, measured: bool = True) -> Path:
    """Write a log as CSV (`measured=False` writes only t and the targets: an excitation to play)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = [("t", log.t[:, None])]
    for j, name in enumerate(log.joints):
        cols.append((f"{name}.target", log.target[:, j : j + 1]))
        if measured:
            cols.append((f"{name}.q", log.q[:, j : j + 1]))
            if log.qd is not None:
                cols.append((f"{name}.qd", log.qd[:, j : j + 1]))
            if log.tau is not None:
                cols.append((f"{name}.tau", log.tau[:, j : j + 1]))
    data = np.hstack([c for _, c in cols])
    np.savetxt(path, data, delimiter=",", header=",".join(h for h, _ in cols), comments="", fmt="%.9g")
    return path


def write_mcap_log(log: JointLog, path: str | Path, *, state_topic: str = "/joint_states",
                   command_topic: str = "/forward_position_controller/commands", command_type: str = "Float64MultiArray",
                   t0: float = 1.0e9, drop: tuple[int, int] | None = None) -> Path:
    """Write a log as an MCAP bag of sensor_msgs/JointState (+ JointState or Float64MultiArray commands).

    Args:
        log: The log.
        path: Output .mcap.
        state_topic: Topic of the measured states.
        command_topic: Topic of the commands.
        command_type: "JointState" or "Float64MultiArray".
        t0: Wall-clock time of the first sample (stamps are t0 + log.t).
        drop: Sample range [a, b) left out of the states, to make a log with a gap (for tests).
    """
    from mcap_ros2.writer import Writer

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(log.joints)
    with path.open("wb") as f:
        w = Writer(f)
        s_state = w.register_msgdef("sensor_msgs/msg/JointState", rosmsg.JOINT_STATE)
        if command_type == "JointState":
            s_cmd = s_state
        elif command_type == "Float64MultiArray":
            s_cmd = w.register_msgdef("std_msgs/msg/Float64MultiArray", rosmsg.FLOAT64_MULTI_ARRAY)
        else:
            raise ValueError(f"command_type '{command_type}': use JointState or Float64MultiArray")
        for i, t in enumerate(log.t):
            ns = round(t0 * 1e9) + round(float(t) * 1e9)
            header = {"stamp": rosmsg.stamp(ns), "frame_id": ""}
            if command_type == "JointState":
                cmd = {"header": header, "name": names, "position": log.target[i].tolist(), "velocity": [], "effort": []}
            else:
                cmd = {"layout": {"dim": [], "data_offset": 0}, "data": log.target[i].tolist()}
            w.write_message(command_topic, s_cmd, cmd, log_time=ns, publish_time=ns)
            if drop is not None and drop[0] <= i < drop[1]:
                continue
            state = {"header": header, "name": names, "position": log.q[i].tolist(),
                     "velocity": [] if log.qd is None else log.qd[i].tolist(),
                     "effort": [] if log.tau is None else log.tau[i].tolist()}
            w.write_message(state_topic, s_state, state, log_time=ns + 1, publish_time=ns + 1)
        w.finish()
    return path
