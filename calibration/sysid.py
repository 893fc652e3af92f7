"""Actuator and joint identification from a logged excitation, by simulating the robot on a test rig.

The rig is the robot model with its base welded in the air (the robot hangs on a stand) and only the legs
whose joints were logged. Per joint group (e.g. all knees share one set, as they share one motor and
gearbox type) it identifies

- kp, kv: the PD gains the motor really delivers (position actuator in MuJoCo);
- latency: delay between a target being sent and the motor acting on it (resolved to the log's period);
- frictionloss (Coulomb) and damping (viscous) joint friction;
- armature: reflected rotor inertia.

Two stages. (1) Equation error: with torque and velocity logged, kp, kv and latency follow from a linear
fit of the measured torque to kp * (delayed target - q) - kv * qd, and armature, damping and friction from
a linear fit of the inverse dynamics (MuJoCo's mj_inverse on smoothed derivatives of the encoder); without
torque, both equations are joined into one. These are the starting point. (2) Output error: SciPy's
least_squares moves the mechanical parameters (and kp, kv when no torque was logged) so the rig, replaying
the logged targets from the logged initial state, reproduces the measured positions (and torques).
Without torque in the log, kv and viscous friction act the same on motion and cannot be told apart: joint
damping is then held at its model value and kv carries the total.

The rig lives in `s2r.calibration.rig`, the reports in `s2r.calibration.sysid_report`.
MuJoCo is imported at module level here and in the rig only (`excite` and `synthetic` import it inside functions), so
camera and hand-eye calibration need no simulator.
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass, field

import mujoco
import numpy as np
from s2r.calibration.logs import JointLog, check_joint_names
from s2r.calibration.rig import RigSim, _copy, actuated_joints
from s2r.calibration.schema import (
    ActuatorCalibration,
    ActuatorGroup,
    CalibrationError,
)

PARAMS = ("kp", "kv", "frictionloss", "damping", "armature")
_FULL = mujoco.mjtState.mjSTATE_FULLPHYSICS


@dataclass(frozen=True, kw_only=True)
class JointGroup:
    """Joints that share one set of actuator parameters (same motor, gearbox and link type)."""

    name: str
    joints: tuple[str, ...]  # fnmatch patterns, e.g. ("*_calf_joint",)


# The Go1's three motor placements; every leg has one of each.
GO1_GROUPS = (
    JointGroup(name="abduction", joints=("*_hip_joint",)),
    JointGroup(name="hip", joints=("*_thigh_joint",)),
    JointGroup(name="knee", joints=("*_calf_joint",)),
)


@dataclass(frozen=True, kw_only=True)
class SysIdConfig:
    """Settings of an actuator identification.

    Attributes:
        model: Robot model in s2r.sim.models.
        base_body: Body welded to the world (the robot hangs on a stand by it).
        groups: Joint groups sharing parameters; every logged joint must fall in exactly one.
        max_latency_s: Largest latency searched.
        fit: Parameters to identify (others stay at the model's values).
        torque_weight: Weight of the torque residual against the position residual (when torque is logged).
        max_nfev: Iterations of the output-error refinement.
        refine_gains: Also move kp and kv in the refinement when torque is logged (by default they come from the
            torque equation alone: one offset-free measurement, and a faster refinement).
        substeps: Physics steps per log sample.
        integrator: MuJoCo integrator of the rig. RK4 by default: the implicit integrators' first-order
            error in velocity-dependent forces (about h * (kv + damping) / inertia of the total damping)
            would otherwise end up in the identified viscous friction.
        threads: Rollout threads for the finite-difference Jacobian (0: one per core).
    """

    model: str = "go1.xml"
    base_body: str = "trunk"
    groups: tuple[JointGroup, ...] = GO1_GROUPS
    max_latency_s: float = 0.03
    fit: tuple[str, ...] = PARAMS
    torque_weight: float = 1.0
    max_nfev: int = 30
    refine_gains: bool = False
    substeps: int = 1
    integrator: str = "RK4"
    threads: int = 0


@dataclass(frozen=True)
class FitStats:
    """How well one parameter set reproduces the log."""

    rms_q_rad: tuple[float, ...]  # per joint
    rms_tau_nm: tuple[float, ...] | None

    @property
    def rms_q(self) -> float:
        return float(np.sqrt(np.mean(np.square(self.rms_q_rad))))

    @property
    def rms_tau(self) -> float | None:
        return None if self.rms_tau_nm is None else float(np.sqrt(np.mean(np.square(self.rms_tau_nm))))


@dataclass(frozen=True)
class SysIdResult:
    """Outcome of `identify_actuators`."""

    calibration: ActuatorCalibration
    log: JointLog
    group_of_joint: tuple[str, ...]
    before: FitStats
    after: FitStats
    q_before: np.ndarray  # (n, j) simulated with the model's values
    q_after: np.ndarray  # (n, j) simulated with the identified values
    tau_before: np.ndarray
    tau_after: np.ndarray
    nominal: dict[str, dict[str, float]]
    notes: tuple[str, ...]
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    iterations: int = 0  # least-squares iterations of the refinement


# ---- rig ------------------------------------------------------------------------------------------------------


def _groups_of(log: JointLog, cfg: SysIdConfig) -> list[str]:
    out = []
    for j in log.joints:
        hits = [g.name for g in cfg.groups if any(fnmatch.fnmatch(j, p) for p in g.joints)]
        if len(hits) != 1:
            pats = {g.name: list(g.joints) for g in cfg.groups}
            raise CalibrationError(f"{log.source}: joint '{j}' matches {len(hits)} joint groups {hits or ''} (groups: {pats}); "
                                   "each logged joint must fall in exactly one group: adjust the groups")
        out.append(hits[0])
    return out


def _nominal(sim: RigSim) -> dict[str, np.ndarray]:
    m, a, d = sim.model, sim.act, sim.dof
    return {"kp": m.actuator_gainprm[a, 0].copy(), "kv": -m.actuator_biasprm[a, 2].copy(),
            "frictionloss": m.dof_frictionloss[d].copy(), "damping": m.dof_damping[d].copy(),
            "armature": m.dof_armature[d].copy()}


def _savgol_derivative(x: np.ndarray, dt: float, window: int = 21) -> np.ndarray:
    from scipy.signal import savgol_filter

    window = min(window, (len(x) // 2) * 2 - 1)
    return savgol_filter(x, window, 3, deriv=1, delta=dt, axis=0)


def _rigid_body_torque(sim: RigSim, q: np.ndarray, qd: np.ndarray, qdd: np.ndarray) -> np.ndarray:
    """Joint torques (n, j) the rig needs for the motion without armature or joint friction (inverse dynamics)."""
    m = _copy(sim.model)
    m.dof_armature[:] = 0.0
    m.dof_damping[:] = 0.0
    m.dof_frictionloss[:] = 0.0
    data = mujoco.MjData(m)
    data.qpos[:] = sim.state0[1 : 1 + m.nq]
    out = np.empty_like(q)
    for i in range(len(q)):
        data.qpos[sim.qadr] = q[i]
        data.qvel[:] = 0.0
        data.qvel[sim.dof] = qd[i]
        data.qacc[:] = 0.0
        data.qacc[sim.dof] = qdd[i]
        mujoco.mj_inverse(m, data)
        out[i] = data.qfrc_inverse[sim.dof]
    return out


def _linear_stage(sim: RigSim, log: JointLog, gidx: np.ndarray, groups: list[str], max_lat: int,
                  nominal: dict[str, np.ndarray]) -> tuple[dict[str, dict[str, float]], int]:
    """Starting values and latency from equations that are linear in the parameters (no simulation).

    With torque logged: kp, kv and latency from the motor equation tau = kp * (target(t - d) - q) - kv * qd,
    then armature, damping and friction from tau - rigid-body torque = armature * qdd + damping * qd +
    frictionloss * sign(qd). Without torque: the two equations are joined, rigid-body torque = kp * (target(t - d)
    - q) - (kv + damping) * qd - frictionloss * sign(qd) - armature * qdd, solved for every latency d.
    """
    n = len(log.t)
    lo = max_lat
    has_tau = log.tau is not None and log.qd is not None
    # Smoothed derivatives of the measured position: the encoder is the cleanest signal a robot logs.
    qd = _savgol_derivative(log.q, log.dt)
    qdd = _savgol_derivative(qd, log.dt)
    tau_rb = _rigid_body_torque(sim, log.q, qd, qdd)
    moving = np.abs(qd) > 0.05  # friction direction is undefined at rest
    # Torque samples at the motor's limit were clipped and obey no PD law.
    sat = np.abs(log.tau) >= 0.98 * np.abs(sim.forcerange).min(axis=1) if has_tau else np.zeros_like(log.q, dtype=bool)
    best: tuple[float, int, dict[str, np.ndarray]] = (np.inf, 0, {})
    for d in range(max_lat + 1):
        err = log.target[lo - d : n - d] - log.q[lo:]
        cost, sols = 0.0, {}
        for gi, g in enumerate(groups):
            cols = np.flatnonzero(gidx == gi)
            if has_tau:
                ok = ~sat[lo:, cols]
                A = np.stack([err[:, cols][ok], -log.qd[lo:, cols][ok]], axis=1)
                y = log.tau[lo:, cols][ok]
            else:
                ok = moving[lo:, cols]
                A = np.stack([err[:, cols][ok], -qd[lo:, cols][ok], -np.sign(qd[lo:, cols][ok]), -qdd[lo:, cols][ok]], 1)
                y = tau_rb[lo:, cols][ok]
            sol, *_ = np.linalg.lstsq(A, y, rcond=None)
            cost += float(np.sum((A @ sol - y) ** 2))
            sols[g] = sol
        if cost < best[0]:
            best = (cost, d, sols)
    _, lat, sols = best
    out: dict[str, dict[str, float]] = {}
    for gi, g in enumerate(groups):
        cols = np.flatnonzero(gidx == gi)
        j0 = cols[0]
        if has_tau:
            ok = moving[:, cols] & ~sat[:, cols]
            A = np.stack([qdd[:, cols][ok], qd[:, cols][ok], np.sign(qd[:, cols][ok])], axis=1)
            rest = log.tau[:, cols][ok] - tau_rb[:, cols][ok]
            arm, damping, friction = np.linalg.lstsq(A, rest, rcond=None)[0]
            kp, kv = sols[g]
        else:
            kp, total, friction, arm = sols[g]
            damping = nominal["damping"][j0]
            kv = total - damping  # joint damping stays at the model's value; kv carries the rest
        out[g] = {"kp": float(kp), "kv": float(max(kv, 0.2 * nominal["kv"][j0])),
                  "armature": float(max(arm, 0.1 * nominal["armature"][j0], 1e-5)),
                  "damping": float(max(damping, 0.0)), "frictionloss": float(max(friction, 0.0))}
    return out, lat


def identify_actuators(log: JointLog, cfg: SysIdConfig) -> SysIdResult:
    """Identify PD gains, latency, joint friction and armature from a log.

    Args:
        log: A uniformly sampled joint log (see `s2r.calibration.logs.read_log`).
        cfg: Settings.

    Raises:
        CalibrationError: Joints that the model does not have or that fall in no group, or a log too short.
    """
    from scipy.optimize import least_squares

    t0 = time.perf_counter()
    stage: dict[str, float] = {}
    check_joint_names(log, actuated_joints(cfg.model), cfg.model)
    unknown_fit = [p for p in cfg.fit if p not in PARAMS]
    if unknown_fit:
        raise CalibrationError(f"cannot fit {unknown_fit}; choose from {PARAMS}")
    groups_of_joint = _groups_of(log, cfg)
    groups = list(dict.fromkeys(groups_of_joint))
    gidx = np.array([groups.index(g) for g in groups_of_joint])
    j0 = [int(np.flatnonzero(gidx == g)[0]) for g in range(len(groups))]  # a representative joint per group
    if not 0.0002 <= log.dt <= 0.01:
        raise CalibrationError(f"{log.source}: samples come every {1000 * log.dt:.2f} ms; identification simulates at the "
                               "log's rate and needs 0.2-10 ms (log the robot's low-level loop)")
    sim = RigSim(log, cfg)
    notes: list[str] = []
    try:
        nominal = _nominal(sim)
        nominal_by_group = {g: {p: float(nominal[p][j0[gi]]) for p in PARAMS} for gi, g in enumerate(groups)}
        max_lat = round(cfg.max_latency_s / log.dt)
        has_tau = log.tau is not None and log.qd is not None
        fit = list(cfg.fit)
        if not has_tau and "damping" in fit:
            # kv may be above or below its nominal value, so kv (bounded away from zero) carries the total rather
            # than joint damping (which cannot go negative).
            fit.remove("damping")
            notes.append("the log has no torque (effort): kv and viscous joint damping act alike on motion, so joint "
                         "damping is held at the model's value and the identified kv carries all velocity damping; "
                         "only kv + damping is meaningful")
        ts = time.perf_counter()
        init, lat = _linear_stage(sim, log, gidx, groups, max_lat, nominal)
        for g in groups:
            init[g].update({p: nominal_by_group[g][p] for p in PARAMS if p not in fit})
        stage["linear"] = time.perf_counter() - ts
        # With torque logged, kp and kv come straight from the motor's own equation (stage 1); the replay then
        # only has to find the mechanical side, which is faster and keeps a torque-sensing offset out of it.
        refine = [p for p in fit if cfg.refine_gains or not has_tau or p not in ("kp", "kv")]
        # Scales so every optimisation variable is O(1): relative for gains and inertia, absolute for friction.
        ref = {"kp": nominal["kp"], "kv": np.maximum(nominal["kv"], 0.05), "armature": np.maximum(nominal["armature"], 1e-3),
               "frictionloss": np.full(len(log.joints), 0.1), "damping": np.full(len(log.joints), 0.1)}
        ng = len(groups)

        def expand(x: np.ndarray) -> dict[str, np.ndarray]:
            vals = {p: np.array([init[g][p] for g in groups_of_joint]) for p in PARAMS}
            for k, p in enumerate(refine):
                vals[p] = x[k * ng : (k + 1) * ng][gidx] * ref[p][np.array(j0)][gidx]
            return vals

        x0 = np.concatenate([[init[g][p] / ref[p][j0[gi]] for gi, g in enumerate(groups)] for p in refine])
        sq = np.maximum(log.q.std(axis=0), 1e-3)
        st = np.maximum(log.tau.std(axis=0), 1e-2) if has_tau else None
        w_tau = cfg.torque_weight / np.sqrt(2.0)

        def residual_from(q: np.ndarray, tau: np.ndarray) -> np.ndarray:
            r = [((q - log.q) / sq).ravel()]
            if has_tau:
                r.append((w_tau * (tau - log.tau) / st).ravel())
            return np.concatenate(r) / np.sqrt(len(log.t))

        lo_b = np.concatenate([np.full(ng, 0.2 if p in ("kp", "kv", "armature") else 0.0) for p in refine])
        hi_b = np.concatenate([np.full(ng, 5.0 if p in ("kp", "kv", "armature") else 30.0) for p in refine])
        cache: dict[bytes, np.ndarray] = {}
        lat_now = [lat]

        def fun(x: np.ndarray) -> np.ndarray:
            key = x.tobytes()
            if key not in cache:
                q, tau = sim.run([sim.with_params(expand(x))], lat_now[0])
                cache.clear()
                cache[key] = residual_from(q[0], tau[0])
            return cache[key]

        def jac(x: np.ndarray) -> np.ndarray:
            # Forward differences, all perturbed models in one batched rollout.
            r0 = fun(x)
            h = 1e-4 * np.maximum(1.0, np.abs(x))
            h = np.where(x + h > hi_b, -h, h)
            xs = [x + h[i] * np.eye(len(x))[i] for i in range(len(x))]
            q, tau = sim.run([sim.with_params(expand(xi)) for xi in xs], lat_now[0])
            return np.stack([(residual_from(q[i], tau[i]) - r0) / h[i] for i in range(len(x))], axis=1)

        # Stop once an iteration lowers the cost by less than 1e-4 of itself: the fit sits at the noise floor then.
        def solve(x: np.ndarray) -> tuple[np.ndarray, int]:
            if not len(x):
                return x, 0
            sol = least_squares(fun, np.clip(x, lo_b + 1e-9, hi_b - 1e-9), jac=jac, bounds=(lo_b, hi_b), method="trf",
                                x_scale=1.0, max_nfev=cfg.max_nfev, ftol=1e-4, xtol=1e-5, gtol=1e-8)
            return sol.x, int(sol.nfev)

        ts = time.perf_counter()
        x, nfev = solve(x0)
        # The latency was chosen before the refinement. Check it again with the refined values: its neighbours
        # when the torque equation fixed it, every candidate when it came from the model's values.
        for _ in range(3):
            cands = [d for d in ((lat - 1, lat + 1) if has_tau else range(max_lat + 1)) if 0 <= d <= max_lat and d != lat]
            m_now = sim.with_params(expand(x))
            q, tau = sim.run([m_now] * len(cands), cands)
            costs = [float(np.sum(residual_from(q[i], tau[i]) ** 2)) for i in range(len(cands))]
            if not costs or min(costs) >= 0.999 * float(np.sum(fun(x) ** 2)):
                break
            new_lat = cands[int(np.argmin(costs))]
            notes.append(f"latency moved from {lat} to {new_lat} samples after the refinement")
            lat_now[0] = lat = new_lat
            cache.clear()
            x, more = solve(x)
            nfev += more
        stage["refine"] = time.perf_counter() - ts
        vals = expand(x)
        qb, tb = sim.run([sim.with_params({})], 0)
        qa, ta = sim.run([sim.with_params(vals)], lat)
    finally:
        sim.close()

    def stats(q: np.ndarray, tau: np.ndarray) -> FitStats:
        rq = tuple(float(v) for v in np.sqrt(np.mean((q - log.q) ** 2, axis=0)))
        rt = tuple(float(v) for v in np.sqrt(np.mean((tau - log.tau) ** 2, axis=0))) if log.tau is not None else None
        return FitStats(rq, rt)

    cal_groups = []
    for gi, g in enumerate(groups):
        j = j0[gi]
        pats = next(gr.joints for gr in cfg.groups if gr.name == g)
        cal_groups.append(ActuatorGroup(
            name=g, joints=tuple(pats), kp=float(vals["kp"][j]), kv=float(vals["kv"][j]),
            frictionloss=float(vals["frictionloss"][j]), damping=float(vals["damping"][j]),
            armature=float(vals["armature"][j]), kp_nominal=float(nominal["kp"][j]), kv_nominal=float(nominal["kv"][j])))
    cal = ActuatorCalibration(model=cfg.model, latency_s=lat * log.dt, timestep_s=log.dt, groups=tuple(cal_groups))
    return SysIdResult(calibration=cal, log=log, group_of_joint=tuple(groups_of_joint), before=stats(qb[0], tb[0]),
                       after=stats(qa[0], ta[0]), q_before=qb[0], q_after=qa[0], tau_before=tb[0], tau_after=ta[0],
                       nominal=nominal_by_group, notes=tuple(notes), seconds=time.perf_counter() - t0,
                       stage_seconds=stage, iterations=nfev)


# ---- report ------------------------------------------------------------------------------------------------
