"""High-fidelity check of a trajectory: a closed-loop MuJoCo flight of the Crazyflie model, many at once.

`fly` flies each reference with the SE(3) controller at 500 Hz, through what the flatness check
(`s2r.real.trajectory.feasibility`) leaves out: first-order motor lag (MuJoCo filter actuators), rotor drag
(force against the body-frame velocity, growing with rotor speed; Förster 2015), thrust saturation of
the individual motors, and optional seeded per-flight randomisation of mass, drag and motor constant. A
flight succeeds when the position error stays within `tracking_bound` from take-off until `settle_s` after
the reference ends, with no crash. Vehicles are stepped together, up to `vehicles_per_world` free bodies in
one MuJoCo world (they never collide), so one `mj_step` and one batched controller call serve them all.

`read_flight_log` computes the same metrics from logs of real flights: the third fidelity.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import mujoco
import numpy as np
from s2r.real.trajectory import PolySpline
from s2r.sim.models import load_crazyflie
from s2r.sim.quadrotor.control import SE3Controller, SE3ControllerConfig, params_from_model

# Förster 2015: thrust = kf * rpm^2 with kf = 3.16e-10 N/rpm^2; in (rad/s)^2 that is kf * (60 / 2 pi)^2.
THRUST_COEFF_RAD = 3.16e-10 * (60.0 / (2.0 * np.pi)) ** 2


@dataclass(frozen=True, kw_only=True)
class FlightConfig:
    """How a high-fidelity flight is simulated and judged.

    Attributes:
        controller: SE(3) controller gains.
        motor_time_constant: s, first-order lag from commanded to produced thrust (Crazyflie ~0.02-0.05).
        drag_coeff: Rotor drag per unit of summed rotor speed, body (x, y, z), kg/rad (Förster 2015 K_aero):
            F_body = -drag_coeff * (sum of rotor speeds, rad/s) * body velocity.
        tracking_bound: m; a flight fails if the position error ever exceeds it.
        settle_s: s of hovering at the last waypoint that still count (overshoot at the end is a failure).
        mass_range: Scale range of the true mass (the controller assumes the nominal one).
        drag_range: Scale range of the rotor drag.
        motor_range: Scale range of the motor thrust constant (the controller assumes 1).
        floor_height: m; a vehicle below it has crashed (None: no floor).
        crash_error: m; a vehicle this far off its reference has crashed (lost, not merely imprecise).
        vehicles_per_world: Vehicles in one MuJoCo world; the step cost grows faster than linearly beyond ~32.
    """

    controller: SE3ControllerConfig = field(default_factory=SE3ControllerConfig)
    motor_time_constant: float = 0.03
    drag_coeff: tuple[float, float, float] = (9.1785e-7, 9.1785e-7, 10.311e-7)
    tracking_bound: float = 0.15
    settle_s: float = 0.5
    mass_range: tuple[float, float] = (0.95, 1.05)
    drag_range: tuple[float, float] = (0.8, 1.2)
    motor_range: tuple[float, float] = (0.95, 1.05)
    floor_height: float | None = 0.0
    crash_error: float = 1.0
    vehicles_per_world: int = 32


@dataclass(frozen=True)
class FlightResult:
    """Outcome of one flight (simulated or logged).

    Attributes:
        success: Tracked within the bound the whole time, no crash.
        max_pos_error: m, largest position error.
        rms_pos_error: m, root-mean-square position error.
        flight_time: s, time flown (the reference duration plus settling, or until the crash).
        crashed: Hit the floor, flipped, diverged or got lost.
    """

    success: bool
    max_pos_error: float
    rms_pos_error: float
    flight_time: float
    crashed: bool


def fly(splines: list[PolySpline], cfg: FlightConfig | None = None, seed: int = 0,
        logs: list[tuple[np.ndarray, np.ndarray]] | None = None, log_every: int = 5) -> list[FlightResult]:
    """Fly every reference in closed loop in MuJoCo and report how well each was tracked.

    Each vehicle starts hovering at its reference's first point with its motors at hover thrust, then
    follows the reference (position, velocity, acceleration, jerk feedforward, yaw 0) and holds the last
    point for `cfg.settle_s`.

    Args:
        splines: References to fly (any number; different durations are fine).
        cfg: Flight settings (default `FlightConfig()`).
        seed: Seed of the per-flight randomisation; results do not depend on how flights are batched.
        logs: When given, one (t (m,), positions (m, 3)) per flight is appended: what a motion-capture log of
            it holds, every `log_every` physics steps from take-off to the end of settling, NaN once crashed.
        log_every: Physics steps between logged samples (5: 100 Hz at the model's 2 ms step).

    Returns:
        One `FlightResult` per spline, in order.
    """
    cfg = cfg or FlightConfig()
    n = len(splines)
    rng = np.random.default_rng(seed)
    # Drawn for every flight up front so a flight's randomisation depends on its index only.
    scales = np.stack([rng.uniform(*cfg.mass_range, n), rng.uniform(*cfg.drag_range, n),
                       rng.uniform(*cfg.motor_range, n)], axis=1) if n else np.zeros((0, 3))
    out: list[FlightResult] = []
    for lo in range(0, n, cfg.vehicles_per_world):
        hi = min(n, lo + cfg.vehicles_per_world)
        out += _fly_world(splines[lo:hi], scales[lo:hi], cfg, logs, log_every)
    return out


def _fly_world(splines: list[PolySpline], scales: np.ndarray, cfg: FlightConfig,
               logs: list[tuple[np.ndarray, np.ndarray]] | None = None, log_every: int = 5) -> list[FlightResult]:
    k = len(splines)
    model = load_crazyflie(k)
    prefixes = [f"cf{i}/" for i in range(k)] if k > 1 else [""]  # load_crazyflie(1) keeps the file's names
    ctrl = SE3Controller(cfg.controller, params_from_model(model, prefix=prefixes[0]))
    nominal_mass = ctrl.params.mass
    model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_CONTACT  # the floor is a crash test, not a surface
    model.opt.integrator = mujoco.mjtIntegrator.mjINT_EULER  # free bodies, no damping: Euler is exact enough
    dt = model.opt.timestep
    bodies = np.array([mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, p + "crazyflie") for p in prefixes])
    mass_s, drag_s, motor_s = scales[:, 0], scales[:, 1], scales[:, 2]
    model.body_mass[bodies] *= mass_s
    model.body_inertia[bodies] *= mass_s[:, None]
    motor4 = np.repeat(motor_s, 4)
    model.actuator_gear[:, 2] *= motor4
    model.actuator_gear[:, 5] *= motor4
    model.actuator_dynprm[:, 0] = cfg.motor_time_constant
    gear_z = model.actuator_gear[:, 2].reshape(k, 4)

    durations = np.array([s.total_time for s in splines])
    ends = durations + cfg.settle_s
    steps = int(np.ceil(ends.max() / dt)) + 1
    times = np.arange(steps) * dt
    # (steps, 4, k, 3): one contiguous block per control step.
    ref = np.ascontiguousarray(np.stack([s.derivatives(times, (0, 1, 2, 3)) for s in splines], axis=2).transpose(1, 0, 2, 3))

    data = mujoco.MjData(model)
    qpos = data.qpos.reshape(k, 7)
    qvel = data.qvel.reshape(k, 6)
    qpos[:, :3] = ref[0, 0]
    qpos[:, 3:] = (1.0, 0.0, 0.0, 0.0)
    hover = (model.body_mass[bodies] * ctrl.params.gravity / 4.0)[:, None] / gear_z
    data.act[:] = hover.ravel()  # motors already spinning at hover: no drop at take-off
    data.ctrl[:] = hover.ravel()
    drag = np.asarray(cfg.drag_coeff)[None, :] * drag_s[:, None]  # (k, 3)

    sq_err = np.zeros(k)
    max_err = np.zeros(k)
    count = np.zeros(k, dtype=np.int64)
    crashed = np.zeros(k, dtype=bool)
    crash_time = ends.copy()
    active = np.ones(k, dtype=bool)
    track: list[np.ndarray] = []  # (k, 3) logged positions, NaN for a crashed vehicle
    for i in range(steps):
        t = times[i]
        pos, quat, vel, omega = qpos[:, :3], qpos[:, 3:], qvel[:, :3], qvel[:, 3:]
        if logs is not None and i % log_every == 0:
            track.append(np.where((crashed | ~np.isfinite(pos).all(axis=1))[:, None], np.nan, pos))
        finite = np.isfinite(qpos).all(axis=1) & np.isfinite(qvel).all(axis=1)
        r = ref[i]
        diff = pos - r[0]
        err = np.sqrt(np.einsum("ni,ni->n", diff, diff))
        upright = 1.0 - 2.0 * (quat[:, 1] ** 2 + quat[:, 2] ** 2)  # body z . world z
        lost = ~finite | (err > cfg.crash_error) | (upright < 0.0)
        if cfg.floor_height is not None:
            lost |= pos[:, 2] < cfg.floor_height
        new_crash = active & lost
        crashed |= new_crash
        crash_time[new_crash] = t
        # The error at the crash counts (capped: a diverged state has no meaningful error).
        max_err[new_crash] = np.maximum(max_err[new_crash], np.minimum(np.nan_to_num(err[new_crash], nan=np.inf),
                                                                       cfg.crash_error))
        active &= ~lost & (t <= ends)
        if not active.any() and logs is None:
            break
        e = np.where(active, err, 0.0)  # inactive vehicles may be NaN; where() drops them
        sq_err += e * e
        max_err = np.maximum(max_err, e)
        count += active
        if not finite.all():
            # A diverged vehicle is already counted as crashed; park it so NaN never reaches the others.
            bad = ~finite
            qpos[bad, :3] = ref[0, 0, bad]
            qpos[bad, 3:] = (1.0, 0.0, 0.0, 0.0)
            qvel[bad] = 0.0
            pos, quat, vel, omega = qpos[:, :3], qpos[:, 3:], qvel[:, :3], qvel[:, 3:]
        u = ctrl(pos, vel, quat, omega, r[0], r[1], r[2], r[3], mass=nominal_mass)
        data.ctrl[:] = u.ravel()
        # Rotor drag: rotor speed from the produced thrust, force against the body-frame velocity.
        thrust = np.maximum(data.act.reshape(k, 4) * gear_z, 0.0)
        rotor_sum = np.sqrt(thrust / THRUST_COEFF_RAD).sum(axis=1)
        R = data.xmat[bodies].reshape(k, 3, 3)
        v_body = np.einsum("nji,nj->ni", R, vel)
        data.xfrc_applied[bodies, :3] = np.einsum("nij,nj->ni", R, -drag * rotor_sum[:, None] * v_body)
        mujoco.mj_step(model, data)

    if logs is not None:
        t_log, pos_log = times[: len(track) * log_every : log_every], np.array(track)
        for j in range(k):
            keep = t_log <= ends[j]
            logs.append((t_log[keep], pos_log[keep, j]))
    results = []
    for j in range(k):
        flown = float(min(crash_time[j], ends[j]))
        rms = float(np.sqrt(sq_err[j] / max(count[j], 1)))
        ok = bool(not crashed[j] and max_err[j] <= cfg.tracking_bound)
        results.append(FlightResult(success=ok, max_pos_error=float(max_err[j]),
                                    rms_pos_error=rms, flight_time=flown, crashed=bool(crashed[j])))
    return results


def flight_metrics(actual: np.ndarray, reference: np.ndarray, t: np.ndarray, bound: float) -> FlightResult:
    """Flight metrics from sampled actual and reference positions, (m, 3) each, at times t (m,); NaN pose = crash."""
    finite = np.isfinite(actual).all(axis=1)
    err = np.linalg.norm(actual[finite] - reference[finite], axis=1)
    crashed = not finite.all()  # a tracking dropout mid-flight (NaN pose) is how a log records a crash
    max_err = float(err.max()) if len(err) else float("inf")
    rms = float(np.sqrt(np.mean(err**2))) if len(err) else float("inf")
    flown = float(t.max() - t.min()) if len(t) else 0.0
    return FlightResult(success=bool(not crashed and max_err <= bound), max_pos_error=max_err, rms_pos_error=rms,
                        flight_time=flown, crashed=crashed)


def read_flight_log(path: str | Path, cfg: FlightConfig | None = None, *, pose_topic: str = "/pose",
                    reference_topic: str = "/reference") -> list[FlightResult]:
    """Metrics of logged real flights, judged like simulated ones (same `tracking_bound`).

    Formats, chosen by the file extension:

    - ``.csv`` with a header row ``traj_id,t,x,y,z,x_ref,y_ref,z_ref``: one row per sample, time in
      seconds, positions in metres (world frame). Rows of one flight share a ``traj_id``; a flight's rows
      are sorted by ``t``. An empty or NaN position (the motion-capture lost the vehicle) marks a crash.
    - ``.mcap`` with JSON messages on topic ``/s2r/flight`` (channel message encoding ``json``), one per
      sample: ``{"traj_id": 0, "t": 0.01, "position": [x, y, z], "reference": [x, y, z]}``.
    - ``.mcap`` recorded by ROS 2 (rosbag2, CDR): ``geometry_msgs/msg/PoseStamped`` on `pose_topic`
      (actual) and `reference_topic` (reference). The whole file is one flight (traj_id 0); the reference
      is linearly interpolated at the pose stamps, and only poses within the reference's time span count.

    Args:
        path: Log file.
        cfg: Supplies `tracking_bound` (default `FlightConfig()`).
        pose_topic: ROS 2 topic of the measured pose.
        reference_topic: ROS 2 topic of the reference pose.

    Returns:
        One `FlightResult` per flight, ordered by traj_id.

    Raises:
        ValueError: Unknown extension, missing columns or topics, or an unreadable row (named in the message).
    """
    cfg = cfg or FlightConfig()
    path = Path(path)
    if path.suffix == ".csv":
        flights = _read_csv(path)
    elif path.suffix == ".mcap":
        flights = _read_mcap(path, pose_topic, reference_topic)
    else:
        raise ValueError(f"{path}: unknown flight-log format '{path.suffix}'; use .csv or .mcap")
    out = []
    for traj in sorted(flights):
        t, act, ref = (np.asarray(v, dtype=np.float64) for v in flights[traj])
        order = np.argsort(t, kind="stable")
        out.append(flight_metrics(act[order].reshape(-1, 3), ref[order].reshape(-1, 3), t[order], cfg.tracking_bound))
    return out


_CSV_COLUMNS = ("traj_id", "t", "x", "y", "z", "x_ref", "y_ref", "z_ref")


def _float(value: str) -> float:
    return float(value) if value.strip() else float("nan")


def _read_csv(path: Path) -> dict[int, tuple[list, list, list]]:
    flights: dict[int, tuple[list, list, list]] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected header {','.join(_CSV_COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            try:
                traj = int(row["traj_id"])
                t = float(row["t"])
                act = [_float(row[c]) for c in ("x", "y", "z")]
                ref = [float(row[c]) for c in ("x_ref", "y_ref", "z_ref")]
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}, line {line}: unreadable value ({err})") from None
            ts, acts, refs = flights.setdefault(traj, ([], [], []))
            ts.append(t)
            acts.append(act)
            refs.append(ref)
    if not flights:
        raise ValueError(f"{path}: no samples")
    return flights


def _read_mcap(path: Path, pose_topic: str, reference_topic: str) -> dict[int, tuple[list, list, list]]:
    from mcap.reader import make_reader

    flights: dict[int, tuple[list, list, list]] = {}
    poses: dict[str, list[tuple[float, list[float]]]] = {pose_topic: [], reference_topic: []}
    with path.open("rb") as f:
        decoders = []
        try:
            from mcap_ros2.decoder import DecoderFactory

            decoders.append(DecoderFactory())
        except ImportError:  # JSON logs need no ROS 2 decoder
            pass
        reader = make_reader(f, decoder_factories=decoders)
        for schema, channel, message in reader.iter_messages():
            if channel.topic == "/s2r/flight" and channel.message_encoding == "json":
                msg = json.loads(message.data)
                ts, acts, refs = flights.setdefault(int(msg["traj_id"]), ([], [], []))
                ts.append(float(msg["t"]))
                acts.append([float("nan") if v is None else float(v) for v in msg["position"]])
                refs.append([float(v) for v in msg["reference"]])
            elif channel.topic in poses and channel.message_encoding == "cdr":
                if not decoders:
                    raise ValueError(f"{path}: ROS 2 messages need the mcap-ros2-support package")
                msg = decoders[0].decoder_for("cdr", schema)(message.data)
                stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
                p = msg.pose.position
                poses[channel.topic].append((stamp, [p.x, p.y, p.z]))
    if flights:
        return flights
    act, ref = poses[pose_topic], poses[reference_topic]
    if not act or not ref:
        raise ValueError(f"{path}: no JSON samples on /s2r/flight and no PoseStamped on both {pose_topic} "
                         f"({len(act)} messages) and {reference_topic} ({len(ref)} messages)")
    ta, pa = np.array([a[0] for a in act]), np.array([a[1] for a in act])
    tr, pr = np.array([r[0] for r in ref]), np.array([r[1] for r in ref])
    order = np.argsort(tr)
    tr, pr = tr[order], pr[order]
    keep = (ta >= tr[0]) & (ta <= tr[-1])
    ta, pa = ta[keep], pa[keep]
    interp = np.stack([np.interp(ta, tr, pr[:, c]) for c in range(3)], axis=1)
    return {0: (ta.tolist(), pa.tolist(), interp.tolist())}
