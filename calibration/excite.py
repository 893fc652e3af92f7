"""Excitation trajectories to run on the robot for actuator identification, inside its safety limits.

The robot should hang on a stand (feet off the ground, trunk fixed) while it plays the trajectory: each
joint sweeps a chirp (slow motion shows friction and gravity, fast motion shows inertia, damping and
latency) and then holds a series of steps (the step response shows stiffness and latency). Amplitudes
shrink with frequency so the target velocity and acceleration stay within limits, every target stays a
margin inside the joint range, and no step asks for more than a share of the motor's torque limit.
Limits come from the robot model (joint ranges, actuator force ranges, kp, home pose), the same MJCF the
simulator trains on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from s2r.calibration import plot
from s2r.calibration.logs import JointLog, write_csv_log
from s2r.calibration.schema import CalibrationError


@dataclass(frozen=True, kw_only=True)
class RobotLimits:
    """What the excitation must respect, per joint.

    Attributes:
        model: Model file the ranges, torque limits, gains and home pose come from.
        joints: Joint names.
        lower: Lowest allowed target (rad): the tighter of the model's range and the robot config's.
        upper: Highest allowed target (rad).
        home: Pose the trajectory starts and ends at (the model's "home" keyframe).
        kp: Position gains (Nm/rad), for the torque a target jump asks for.
        torque_max: Motor torque limits (Nm).
        velocity_limit: Largest target speed (rad/s) the robot's safety layer lets through (inf: none given).
        max_target_delta: Largest change of a target in one command the safety layer lets through (rad).
        robot_config: The robot config (robot.yaml) the limits were tightened with, if any.
    """

    model: str
    joints: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    home: np.ndarray
    kp: np.ndarray
    torque_max: np.ndarray
    velocity_limit: np.ndarray | None = None
    max_target_delta: float = float("inf")
    robot_config: str = ""


def robot_limits(model: str = "go1.xml", joints: tuple[str, ...] = (), robot_config: str | Path | None = None) -> RobotLimits:
    """Joint ranges, torque limits, gains and home pose of the actuated joints of a bundled robot model.

    Args:
        model: Model file in s2r.sim.models (e.g. "go1.xml").
        joints: Joints to include (default: every actuated joint).
        robot_config: A robot.yaml (launch/robots/) whose joint limits, velocity limit and largest target step
            the robot's safety layer enforces: the excitation must stay inside them too, or the safety layer
            would change the very commands being identified.
    """
    import mujoco
    from s2r.sim.models import model_path

    try:
        m = mujoco.MjModel.from_xml_path(str(model_path(model)))
    except FileNotFoundError as exc:
        raise CalibrationError(str(exc)) from None
    names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, m.actuator_trnid[a, 0]) for a in range(m.nu)]
    home = m.key("home").ctrl.copy() if any(m.key(i).name == "home" for i in range(m.nkey)) else None
    want = list(joints) or names
    unknown = [j for j in want if j not in names]
    if unknown:
        raise CalibrationError(f"joint(s) {unknown} are not actuated joints of {model}; its joints are {names}")
    a = np.array([names.index(j) for j in want])
    jid = m.actuator_trnid[a, 0]
    lo, hi = m.jnt_range[jid, 0], m.jnt_range[jid, 1]
    h = home[a] if home is not None else (lo + hi) / 2
    lo, hi = lo.copy(), hi.copy()
    vel, delta, source = None, float("inf"), ""
    if robot_config:
        from s2r.real.robot import RobotConfigError, load_robot_config

        try:
            rc = load_robot_config(robot_config)
        except RobotConfigError as exc:
            raise CalibrationError(str(exc)) from None
        missing = [j for j in want if j not in rc.joint_names]
        if missing:
            raise CalibrationError(f"{robot_config}: has no joint(s) {missing}; its joints are {list(rc.joint_names)}. "
                                   f"Pass the robot config that belongs to {model}")
        idx = [rc.joint_names.index(j) for j in want]
        lo = np.maximum(lo, np.asarray(rc.joint_lower)[idx])
        hi = np.minimum(hi, np.asarray(rc.joint_upper)[idx])
        vel = np.asarray(rc.velocity_limit, dtype=float)[idx]
        delta, source = float(rc.max_target_delta), str(robot_config)
    return RobotLimits(model=model, joints=tuple(want), lower=lo, upper=hi, home=h, kp=m.actuator_gainprm[a, 0].copy(),
                       torque_max=np.abs(m.actuator_forcerange[a]).min(axis=1), velocity_limit=vel,
                       max_target_delta=delta, robot_config=source)


def _speed_limit(limits: RobotLimits, cfg: ExciteConfig) -> np.ndarray:
    """Per-joint target speed limit: the excitation's own, or the robot config's where tighter."""
    v = np.full(len(limits.joints), cfg.max_velocity)
    return v if limits.velocity_limit is None else np.minimum(v, limits.velocity_limit)


def _jump_limit(limits: RobotLimits, cfg: ExciteConfig) -> np.ndarray:
    """Per-joint largest target jump: kp * jump within the torque share, and within the safety layer's step."""
    return np.minimum(cfg.torque_fraction * limits.torque_max / limits.kp, limits.max_target_delta)


@dataclass(frozen=True, kw_only=True)
class ExciteConfig:
    """Shape and safety limits of an excitation.

    Attributes:
        kind: "chirp", "steps" or "chirp+steps".
        seconds: Length of the excitation part (the ramps from and back to home come on top).
        rate_hz: Command rate (the robot's low-level loop rate).
        f0_hz: Chirp start frequency.
        f1_hz: Chirp end frequency.
        amplitude_rad: Largest chirp amplitude about the home pose.
        step_rad: Largest step offset from home.
        hold_s: Range of hold times between steps.
        ramp_s: Smooth move from home into the trajectory and back.
        margin_rad: Targets stay this far inside the joint range.
        max_velocity: Target velocity limit in rad/s (chirp parts).
        max_acceleration: Target acceleration limit in rad/s^2 (chirp parts).
        torque_fraction: A target jump times kp stays below this share of the torque limit.
        seed: Seed of the step sequence and phases.
    """

    kind: str = "chirp+steps"
    seconds: float = 10.0
    rate_hz: float = 1000.0
    f0_hz: float = 0.3
    f1_hz: float = 6.0
    amplitude_rad: float = 0.35
    step_rad: float = 0.25
    hold_s: tuple[float, float] = (0.25, 0.6)
    ramp_s: float = 1.0
    margin_rad: float = 0.1
    max_velocity: float = 6.0
    max_acceleration: float = 150.0
    torque_fraction: float = 0.6
    seed: int = 0


def generate_excitation(limits: RobotLimits, cfg: ExciteConfig) -> JointLog:
    """Targets (t, per joint) for the robot to play; checked against the limits before they are returned.

    Raises:
        CalibrationError: Settings that cannot be met (e.g. a home pose outside the margin).
    """
    if cfg.kind not in ("chirp", "steps", "chirp+steps"):
        raise CalibrationError(f"excitation kind '{cfg.kind}' is unknown; use chirp, steps or chirp+steps")
    rng = np.random.default_rng(cfg.seed)
    dt = 1.0 / cfg.rate_hz
    nj = len(limits.joints)
    lo, hi = limits.lower + cfg.margin_rad, limits.upper - cfg.margin_rad
    home = limits.home
    if ((home < lo) | (home > hi)).any():
        bad = [j for j, h, a, b in zip(limits.joints, home, lo, hi, strict=True) if not a <= h <= b]
        raise CalibrationError(f"home pose of {bad} is within {cfg.margin_rad} rad of the joint limit; lower --margin")
    room = np.minimum(home - lo, hi - home)  # how far each joint may move either way
    parts = []
    t_ex = cfg.seconds
    if cfg.kind == "chirp+steps":
        t_chirp, t_steps = 0.6 * t_ex, 0.4 * t_ex
    elif cfg.kind == "chirp":
        t_chirp, t_steps = t_ex, 0.0
    else:
        t_chirp, t_steps = 0.0, t_ex
    if t_chirp > 0:
        t = np.arange(round(t_chirp / dt)) * dt
        k = cfg.f1_hz / cfg.f0_hz
        f = cfg.f0_hz * k ** (t / t_chirp)  # exponential sweep: equal time per octave
        phase = 2 * np.pi * cfg.f0_hz * t_chirp / np.log(k) * (k ** (t / t_chirp) - 1)
        w = 2 * np.pi * f
        # Amplitude envelope that keeps |v| = A w and |a| = A w^2 inside the limits; fade in and out over 0.5 s.
        vmax = _speed_limit(limits, cfg)
        fade = np.clip(np.minimum(t, t[-1] - t) / 0.5, 0, 1)  # exactly home at both ends, so steps start from home
        fade = 0.5 - 0.5 * np.cos(np.pi * fade)
        offsets = rng.uniform(0, 2 * np.pi, nj)
        # Velocity/acceleration limits hold for the envelope; the fade's own slope is small in comparison.
        chirp = np.stack([np.minimum.reduce([np.full_like(t, min(cfg.amplitude_rad, room[j])), 0.98 * vmax[j] / w,
                                             cfg.max_acceleration / w**2]) * fade * np.sin(phase + offsets[j])
                          for j in range(nj)], axis=1)
        parts.append(home + chirp)
    if t_steps > 0:
        n = round(t_steps / dt)
        jump = _jump_limit(limits, cfg)
        steps = np.zeros((n, nj))
        for j in range(nj):
            i, level = 0, 0.0
            while i < n:
                hold = int(rng.uniform(*cfg.hold_s) / dt)
                span = min(cfg.step_rad, room[j])
                new = rng.uniform(-span, span)
                new = level + np.clip(new - level, -jump[j], jump[j])
                level = float(np.clip(new, -span, span))
                steps[i : i + hold, j] = level
                i += hold
            steps[-int(0.3 / dt):, j] = np.linspace(steps[-int(0.3 / dt), j], 0.0, int(0.3 / dt))  # back to home
        parts.append(home + steps)
    body = np.concatenate(parts, axis=0)
    # Smooth ramps so the first and last commands equal the home pose the robot already holds.
    nr = round(cfg.ramp_s / dt)
    s = 0.5 - 0.5 * np.cos(np.pi * np.arange(nr) / nr)
    ramp_in = home + s[:, None] * (body[0] - home)
    ramp_out = body[-1] + s[:, None] * (home - body[-1])
    targets = np.concatenate([np.tile(home, (int(0.5 / dt), 1)), ramp_in, body, ramp_out, np.tile(home, (int(0.5 / dt), 1))])
    t = np.arange(len(targets)) * dt
    log = JointLog(source="excitation", joints=limits.joints, t=t, target=targets, q=targets.copy())
    violations = check_excitation(log, limits, cfg)
    if violations:
        raise CalibrationError("the generated excitation breaks the limits: " + "; ".join(violations))
    return log


def check_excitation(log: JointLog, limits: RobotLimits, cfg: ExciteConfig) -> list[str]:
    """Every way a trajectory breaks the safety limits (empty when it is safe to play).

    Checks: targets inside the range minus the margin; smooth parts within the velocity limit; jumps within
    the torque share; start and end at the home pose.
    """
    out = []
    dt = float(np.median(np.diff(log.t)))
    x = log.target
    lo, hi = limits.lower + cfg.margin_rad - 1e-9, limits.upper - cfg.margin_rad + 1e-9
    vmax, jmax = _speed_limit(limits, cfg), _jump_limit(limits, cfg)
    for j, name in enumerate(log.joints):
        if x[:, j].min() < lo[j] or x[:, j].max() > hi[j]:
            out.append(f"{name} goes to [{x[:, j].min():.3f}, {x[:, j].max():.3f}] rad, outside [{lo[j]:.3f}, {hi[j]:.3f}]")
        d = np.abs(np.diff(x[:, j]))
        # A step is one isolated change; consecutive fast samples are motion and must respect the velocity limit.
        fast = d > 1.05 * vmax[j] * dt
        neighbours_fast = np.zeros_like(fast)
        neighbours_fast[1:] |= fast[:-1]
        neighbours_fast[:-1] |= fast[1:]
        jumps = fast & ~neighbours_fast
        if jumps.any() and d[jumps].max() > jmax[j] + 1e-9:
            out.append(f"{name} jumps {d[jumps].max():.3f} rad at once (max {jmax[j]:.3f} rad: kp*jump within "
                       f"{100 * cfg.torque_fraction:.0f} % of {limits.torque_max[j]:.1f} Nm and the robot config's "
                       "largest target step)")
        smooth = d[~jumps] / dt
        if smooth.size and smooth.max() > 1.05 * vmax[j]:
            out.append(f"{name} moves at {smooth.max():.2f} rad/s, above {vmax[j]:.2f} rad/s")
        if abs(x[0, j] - limits.home[j]) > 1e-6 or abs(x[-1, j] - limits.home[j]) > 1e-6:
            out.append(f"{name} does not start and end at its home pose {limits.home[j]:.3f} rad")
    return out


def write_excitation(log: JointLog, limits: RobotLimits, cfg: ExciteConfig, out: str | Path) -> dict[str, Path]:
    """Write the trajectory CSV (t + <joint>.target), a text report (.txt) and a plot (.png)."""
    out = Path(out)
    csv_path = write_csv_log(log, out, measured=False)
    dt = float(np.median(np.diff(log.t)))
    lines = ["s2r actuator excitation",
             f"model        {limits.model}",
             f"kind         {cfg.kind}, {log.t[-1]:.2f} s at {1 / dt:.0f} Hz ({len(log.t)} commands)",
             f"chirp        {cfg.f0_hz}..{cfg.f1_hz} Hz, amplitude <= {cfg.amplitude_rad} rad; steps <= {cfg.step_rad} rad",
             f"limits       margin {cfg.margin_rad} rad inside the joint range, |v| <= {cfg.max_velocity} rad/s, "
             f"kp*jump <= {100 * cfg.torque_fraction:.0f} % of the torque limit",
             f"robot config {limits.robot_config or 'none given (model limits only; pass --robot launch/robots/<robot>.yaml)'}",
             "safety check passed: every limit below holds",
             "",
             "Play it with the robot on a stand (feet free), log joint targets, positions, velocities and torques, then",
             "run `s2r calibrate actuators <log>` (CSV columns <joint>.target,.q,.qd,.tau or an MCAP of JointState).",
             "",
             f"{'joint':18s} {'home':>7s} {'min':>7s} {'max':>7s} {'range lo':>8s} {'range hi':>8s} {'max |v|':>8s}"]
    for j, n in enumerate(log.joints):
        x = log.target[:, j]
        d = np.abs(np.diff(x)) / dt
        slow = d <= 1.05 * _speed_limit(limits, cfg)[j]
        v = d[slow].max() if slow.any() else 0.0
        lines.append(f"{n:18s} {limits.home[j]:7.3f} {x.min():7.3f} {x.max():7.3f} {limits.lower[j]:8.3f} "
                     f"{limits.upper[j]:8.3f} {v:8.2f}")
    txt = out.with_suffix(".txt")
    txt.write_text("\n".join(lines) + "\n")
    panels = []
    for j, n in enumerate(log.joints[:8]):
        p = plot.Panel(f"{n} target", "s", "rad")
        p.add("target", log.t, log.target[:, j], color=0)
        p.add("limit - margin", log.t[[0, -1]], np.full(2, limits.lower[j] + cfg.margin_rad), color=3)
        p.add("", log.t[[0, -1]], np.full(2, limits.upper[j] - cfg.margin_rad), color=3)
        panels.append(p)
    png = plot.save_png(out.with_suffix(".png"), plot.figure(panels, cols=2 if len(panels) > 1 else 1))
    return {"trajectory": csv_path, "report": txt, "figure": png}
