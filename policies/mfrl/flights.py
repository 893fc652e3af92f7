"""Real (or stand-in) flights paired with the plans they flew: the highest fidelity of an MFRL run.

The robot's planner node (ros_ws/src/s2r_ros/s2r_ros/planner_node.py) tags every trajectory it publishes with a
plan id: the trajectory's `header.stamp` as integer nanoseconds (`sec * 10**9 + nanosec`), which is also the
time the plan starts. It repeats the id with the plan itself in its `planner_status` JSON
(`"plan": {"id", "waypoints", "durations"}`), so a recording of that topic carries every plan flown.

A flight folder (`s2r train --resume RUN --flights DIR`) holds, in any mix:

- ``*.mcap`` recorded by `s2r deploy --record` (rosbag2 layout, CDR): `std_msgs/msg/String` on a topic ending in
  ``planner_status`` (the plans) and `geometry_msgs/msg/PoseStamped` on ``/pose`` (the measured position). The
  flight of plan P is every pose stamped in [P's start, P's start + its duration + settle_s], cut at the next
  plan's start; a plan replaced before its end (re-planned mid-flight) is not a flight.
- ``*.csv`` from a flight controller's log, header ``plan_id,t,x,y,z``: the plan id, seconds since the plan's
  start, and the measured position in metres (the plan's frame). Several plans may share a file; an empty
  or NaN position marks the vehicle lost (a crash, as a motion-capture dropout logs it).
- ``plans.jsonl``: one plan per line, ``{"plan_id": <int>, "waypoints": [[x, y, z], ...], "durations": [...]}``
  (the status messages' ``plan`` objects), for CSV logs whose plans were not recorded in an MCAP.

Each flight is scored like a simulated one (`high_fidelity_score` with the run's tracking bound) against the
plan's own minimum-snap reference. A log that cannot be read, a flight that stops before its plan ends
(truncated), or a flight whose plan id is in no plan (unpaired) makes its whole file skipped with one sentence
naming the file: a file is used whole or not at all.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from s2r.real.trajectory import TrajectoryError, check_waypoints, min_snap
from s2r.sim.quadrotor.flight import FlightConfig, FlightResult, flight_metrics

CSV_COLUMNS = ("plan_id", "t", "x", "y", "z")
POSE_TOPIC = "/pose"
STATUS_SUFFIX = "planner_status"
PLANS_FILE = "plans.jsonl"


class FlightLogError(ValueError):
    """A log that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class LoggedPlan:
    """A plan as the planner node published it."""

    plan_id: int
    waypoints: np.ndarray  # (n, 3)
    durations: np.ndarray  # (n - 1,)


@dataclass(frozen=True)
class LoggedFlight:
    """One flight paired with its plan, scored."""

    plan: LoggedPlan
    result: FlightResult
    source: str


@dataclass(frozen=True)
class FlightFolder:
    """What `read_flight_folder` found: the usable flights and one sentence per skipped file."""

    flights: list[LoggedFlight]
    skipped: list[str]


def _plan(obj: dict, where: str) -> LoggedPlan:
    try:
        pid = int(obj.get("plan_id", obj.get("id")))
        w = check_waypoints(obj["waypoints"])
        d = np.asarray(obj["durations"], dtype=np.float64).reshape(-1)
    except (KeyError, TypeError, ValueError, TrajectoryError) as exc:
        raise FlightLogError(f"{where}: a plan needs an integer plan_id, (n, 3) waypoints and n - 1 durations ({exc})") from None
    if d.shape != (len(w) - 1,) or not (np.isfinite(d).all() and (d > 0).all()):
        raise FlightLogError(f"{where}: plan {pid} has {d.size} durations for {len(w)} waypoints; need {len(w) - 1} "
                             "positive ones")
    return LoggedPlan(plan_id=pid, waypoints=w, durations=d)


def _read_plans_jsonl(path: Path) -> dict[int, LoggedPlan]:
    plans = {}
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FlightLogError(f"{path}, line {i}: not JSON ({exc.msg}); one plan object per line") from None
            p = _plan(obj, f"{path}, line {i}")
            plans[p.plan_id] = p
    return plans


def _read_csv(path: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """plan id -> (t (m,), positions (m, 3)), sorted by t."""
    rows: dict[int, list[list[float]]] = {}
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != list(CSV_COLUMNS):
            raise FlightLogError(f"{path}: header is {header}, expected {','.join(CSV_COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            if len(row) != len(CSV_COLUMNS):
                raise FlightLogError(f"{path}, line {line}: {len(row)} fields, expected {len(CSV_COLUMNS)} (a cut-off "
                                     "or malformed row)")
            try:
                pid, t = int(row[0]), float(row[1])
                pos = [float(v) if v.strip() else float("nan") for v in row[2:]]
            except ValueError as exc:
                raise FlightLogError(f"{path}, line {line}: unreadable value ({exc})") from None
            if not np.isfinite(t):
                raise FlightLogError(f"{path}, line {line}: time {row[1]!r} is not a number of seconds")
            rows.setdefault(pid, []).append([t, *pos])
    if not rows:
        raise FlightLogError(f"{path}: no samples after the header")
    out = {}
    for pid, r in rows.items():
        a = np.array(r)
        a = a[np.argsort(a[:, 0], kind="stable")]
        out[pid] = (a[:, 0], a[:, 1:])
    return out


def _read_mcap(path: Path) -> tuple[dict[int, LoggedPlan], tuple[np.ndarray, np.ndarray]]:
    """(plans from the status topic, (pose stamps in ns (m,), positions (m, 3)))."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    plans: dict[int, LoggedPlan] = {}
    stamps, poses = [], []
    try:
        with path.open("rb") as f:
            reader = make_reader(f, decoder_factories=[DecoderFactory()])
            for _, channel, _, msg in reader.iter_decoded_messages():
                if channel.topic.endswith(STATUS_SUFFIX):
                    status = json.loads(msg.data)
                    if isinstance(status, dict) and isinstance(status.get("plan"), dict):
                        p = _plan(status["plan"], f"{path} ({channel.topic})")
                        plans[p.plan_id] = p
                elif channel.topic == POSE_TOPIC:
                    stamps.append(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
                    q = msg.pose.position
                    poses.append([q.x, q.y, q.z])
    except FlightLogError:
        raise
    except Exception as exc:  # a cut-off or corrupt MCAP raises many kinds; all mean "unreadable"
        raise FlightLogError(f"{path}: unreadable MCAP ({type(exc).__name__}: {exc}); a recording cut off "
                             "mid-write cannot be used") from None
    return plans, (np.array(stamps, dtype=np.int64), np.array(poses, dtype=np.float64).reshape(-1, 3))


def _score(plan: LoggedPlan, t: np.ndarray, pos: np.ndarray, cfg: FlightConfig, where: str) -> FlightResult:
    """Score one flight (t: s since the plan's start) against the plan's reference; raises if it is truncated."""
    spline = min_snap(plan.waypoints, plan.durations)
    end = spline.total_time + cfg.settle_s
    keep = (t >= 0.0) & (t <= end)
    t, pos = t[keep], pos[keep]
    # Tolerate one missing sample at either end (logs and plans do not share a clock tick).
    slack = max(float(np.median(np.diff(t))) if len(t) > 2 else 0.0, 0.02) * 2
    if len(t) < 2 or t[0] > slack or t[-1] < spline.total_time - slack:
        have = f"{t[0]:.2f}-{t[-1]:.2f} s" if len(t) else "no samples"
        raise FlightLogError(f"{where}: plan {plan.plan_id}'s flight is truncated ({have} of its "
                             f"0-{spline.total_time:.2f} s); a partial flight cannot be scored")
    return flight_metrics(pos, spline.evaluate(t), t, cfg.tracking_bound)


def read_flight_folder(folder: str | Path, cfg: FlightConfig | None = None) -> FlightFolder:
    """Pair every logged flight in `folder` with its plan and score it (see the module docstring for formats).

    Args:
        folder: Folder of ``*.mcap``, ``*.csv`` and ``plans.jsonl`` files (not searched recursively).
        cfg: Supplies `tracking_bound` and `settle_s` (the run's flight settings).

    Returns:
        The flights in file order, and one sentence per skipped file.

    Raises:
        FlightLogError: The folder does not exist or holds no log at all.
    """
    cfg = cfg or FlightConfig()
    root = Path(folder)
    if not root.is_dir():
        raise FlightLogError(f"--flights {root}: no such folder; give the folder holding the flight logs")
    files = sorted(p for p in root.iterdir() if p.suffix in (".mcap", ".csv"))
    if not files:
        raise FlightLogError(f"--flights {root}: no .mcap or .csv logs in it (see s2r.policies.mfrl.flights for formats)")
    skipped: list[str] = []
    plans: dict[int, LoggedPlan] = {}
    if (root / PLANS_FILE).is_file():
        try:
            plans.update(_read_plans_jsonl(root / PLANS_FILE))
        except FlightLogError as exc:
            skipped.append(f"{exc}; skipped")
    mcaps: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
    for path in (p for p in files if p.suffix == ".mcap"):  # plans first: a CSV may fly a plan an MCAP recorded
        try:
            found, mcaps[path] = _read_mcap(path)
            plans.update(found)
        except FlightLogError as exc:
            skipped.append(f"{exc}; skipped")
    flights: list[LoggedFlight] = []
    for path in files:
        try:
            if path.suffix == ".csv":
                per_plan = _read_csv(path)
            elif path in mcaps:
                per_plan = _mcap_flights(path, mcaps[path], plans, cfg)
            else:
                continue  # already skipped
            unpaired = sorted(set(per_plan) - set(plans))
            if unpaired:
                raise FlightLogError(f"{path}: plan id {unpaired[0]} is in no recorded plan (no planner_status in the "
                                     f"MCAPs, no line of {PLANS_FILE}); it cannot be paired")
            if not per_plan:
                raise FlightLogError(f"{path}: no pose on {POSE_TOPIC} during any recorded plan")
            flights += [LoggedFlight(plans[pid], _score(plans[pid], t, pos, cfg, str(path)), str(path))
                        for pid, (t, pos) in sorted(per_plan.items())]
        except FlightLogError as exc:
            skipped.append(f"{exc}; skipped")
    return FlightFolder(flights=flights, skipped=skipped)


def _mcap_flights(path: Path, poses: tuple[np.ndarray, np.ndarray], plans: dict[int, LoggedPlan],
                  cfg: FlightConfig) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The poses of `path` cut into flights, one per plan whose window holds any of them.

    A plan replaced by the next one before its own end (a re-plan mid-flight) was never flown to the end: it
    is left out, not counted as a truncated flight; its settling window stops where the next plan starts.
    """
    stamps, pos = poses
    if not len(stamps):
        raise FlightLogError(f"{path}: no geometry_msgs/PoseStamped on {POSE_TOPIC}; record the measured pose there")
    starts = sorted(plans)
    out = {}
    for i, pid in enumerate(starts):
        plan = plans[pid]
        nxt = (starts[i + 1] - pid) * 1e-9 if i + 1 < len(starts) else np.inf
        if nxt < plan.durations.sum():
            continue  # superseded by a re-plan
        t = (stamps - pid) * 1e-9
        inside = (t >= 0.0) & (t <= min(plan.durations.sum() + cfg.settle_s, nxt)) & (t < nxt)
        if inside.any():
            order = np.argsort(t[inside], kind="stable")
            out[pid] = (t[inside][order], pos[inside][order])
    return out


def write_flight_csv(path: str | Path, flights: list[tuple[int, np.ndarray, np.ndarray]]) -> Path:
    """Write flights in the CSV format above: (plan id, t (m,) s since the plan's start, positions (m, 3)) each."""
    path = Path(path)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(CSV_COLUMNS)
        for pid, t, pos in flights:
            for ti, p in zip(np.asarray(t).tolist(), np.asarray(pos).tolist(), strict=True):
                out.writerow([pid, f"{ti:.4f}", *("" if not np.isfinite(v) else f"{v:.5f}" for v in p)])
    return path


def write_plans(path: str | Path, plans: list[LoggedPlan]) -> Path:
    """Append plans to a ``plans.jsonl`` file (one JSON object per line, as the status messages carry them)."""
    path = Path(path)
    with path.open("a") as f:
        for p in plans:
            f.write(json.dumps({"plan_id": int(p.plan_id), "waypoints": np.asarray(p.waypoints).tolist(),
                                "durations": np.asarray(p.durations).tolist()}) + "\n")
    return path
