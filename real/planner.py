"""The learned waypoint re-planner on the robot: waypoints in, a feasible minimum-snap trajectory out.

A planner policy (exported by `s2r.policies.mfrl` as policy.onnx + policy.json) reads a waypoint set in the
layout of the `Crazyflie-Replan-Waypoints` task's `policy` observation (positions relative to the first
waypoint, zero-padded to `max_waypoints` x 3, then a `max_waypoints` mask) and answers one log-ratio per
segment: segment i lasts `heuristic_i * max_ratio ** clip(a_i, -1, 1)`, with the heuristic allocation of
`s2r.real.trajectory.heuristic_durations` computed exactly as in training. `encode_obs` and
`durations_from_actions` are the one definition of that layout and rule: the task and the trainer import them.

The network is never trusted blindly. Every plan goes through the low-fidelity (flatness) check; an
infeasible timing is stretched by one common factor to the fastest feasible one (slowing a rest-to-rest
plan by k divides accelerations by k^2 and jerks by k^3, and keeps the path), a non-finite network output
falls back to the heuristic timing, and when nothing can be made feasible (the path itself dips below
`min_height`, which no timing changes) the result says `feasible=False` and must not be flown.

numpy + onnxruntime only, like the rest of `s2r.real`.

The planner settings are read from policy.json's typed sections (`s2r.real.metadata`, schema version 2, as
`policies/mfrl/export.py` writes them): the `segment_time_ratio` action kind (max_ratio, max_waypoints) and
the `planner` section (feasibility_dt, limits: QuadLimits fields, heuristic: heuristic_durations keyword
arguments). A version 1 file (settings in `extras`) is converted on load and reads the same.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import onnxruntime as ort
from s2r.real.metadata import MetadataError, PolicyMetadata, SegmentTimeRatioAction, load_metadata
from s2r.real.trajectory import (
    FeasibilityReport,
    PolySpline,
    QuadLimits,
    ScaledChecker,
    check_waypoints,
    feasibility,
    heuristic_durations,
    min_snap,
    time_scaled,
)

_SCALES_PER_PASS = 6  # stretch search: grid points per refinement pass (5 new scales checked at once)
_HEURISTIC_KEYS = frozenset({"speed", "accel_fraction"})
_LIMIT_KEYS = frozenset(f.name for f in fields(QuadLimits))


class PlannerError(MetadataError):
    """A planner export that cannot be used: missing settings, or a graph that does not fit them."""


@dataclass(frozen=True, kw_only=True)
class PlannerConfig:
    """How the robot runs the planner.

    Attributes:
        threads: onnxruntime intra-op threads; 1 keeps re-planning latency steady next to the control loop.
        dt: s, sampling period of the feasibility check; None uses the export's `feasibility_dt` (what the
            planner was trained against).
        max_stretch: Largest common time scale applied to make a timing feasible.
        min_margin: Feasibility margin a plan must reach (> 0 leaves headroom for the tracking controller).
            Hovering bounds it: the min-thrust slack never exceeds (m g - min_total_thrust) / max_total_thrust
            (0.37 for the default Crazyflie limits), so a larger value makes every plan infeasible.
        stretch_tol: Relative precision of the stretch factor (the bisection stops at hi / lo <= 1 + tol).
        min_separation: m; consecutive waypoints closer than this are duplicates and refused.
    """

    threads: int = 1
    dt: float | None = None
    max_stretch: float = 4.0
    min_margin: float = 0.0
    stretch_tol: float = 0.01
    min_separation: float = 1e-3


@dataclass(frozen=True, kw_only=True)
class PlannerSettings:
    """What the export says about the planner (policy.json's action kind and planner section).

    Attributes:
        max_waypoints: Largest waypoint count the network reads.
        max_ratio: Action +-1 scales a segment's heuristic duration by max_ratio^+-1.
        feasibility_dt: s, sampling period of the check used in training (and for the heuristic).
        limits: Vehicle limits of the feasibility check.
        heuristic: Keyword arguments of `heuristic_durations` used in training (speed, accel_fraction).
    """

    max_waypoints: int
    max_ratio: float
    feasibility_dt: float
    limits: QuadLimits
    heuristic: dict[str, float]

    @classmethod
    def from_metadata(cls, meta: PolicyMetadata, where: str) -> PlannerSettings:
        """Read and check the settings; raises PlannerError naming the file and the bad field."""
        action, sec = meta.action, meta.planner
        if not isinstance(action, SegmentTimeRatioAction) or sec is None:
            raise PlannerError(f"{where} is not a waypoint planner export (action kind '{action.kind}', "
                               f"{'no' if sec is None else 'a'} planner section; expected "
                               f"'{SegmentTimeRatioAction.kind}' with one); export one with policies/mfrl/export.py")
        if not sec.feasibility_dt > 0.0:
            raise PlannerError(f"{where}: planner feasibility_dt must be a positive number of seconds, got "
                               f"{sec.feasibility_dt!r}")
        if set(sec.limits) - _LIMIT_KEYS:
            raise PlannerError(f"{where}: planner limits must map QuadLimits fields {sorted(_LIMIT_KEYS)} to numbers; "
                               f"unknown: {sorted(set(sec.limits) - _LIMIT_KEYS)}")
        if set(sec.heuristic) - _HEURISTIC_KEYS:
            raise PlannerError(f"{where}: planner heuristic may only set {sorted(_HEURISTIC_KEYS)}; got {sec.heuristic!r}")
        return cls(max_waypoints=action.max_waypoints, max_ratio=action.max_ratio, feasibility_dt=sec.feasibility_dt,
                   limits=QuadLimits(**sec.limits), heuristic=dict(sec.heuristic))


@dataclass(frozen=True)
class PlanResult:
    """One re-plan.

    Attributes:
        spline: The trajectory (the stretched one when `stretched`); do not fly it unless `feasible`.
        durations: (segments,) seconds per segment of `spline`.
        total_time: s, their sum.
        feasible: The low-fidelity check passes with at least `PlannerConfig.min_margin`.
        stretched: The timing was slowed down by `scale` to become feasible.
        message: One sentence on what happened (shown to the operator and in the planner status).
        infer_s: s spent in onnxruntime.
        total_s: s spent in `plan` altogether.
        scale: Common time scale applied (1.0 when none).
        margin: Feasibility margin of `spline`.
        used_heuristic: The heuristic timing replaced the network's (non-finite output, or an unfixable timing).
    """

    spline: PolySpline
    durations: np.ndarray
    total_time: float
    feasible: bool
    stretched: bool
    message: str
    infer_s: float
    total_s: float
    scale: float = 1.0
    margin: float = 0.0
    used_heuristic: bool = False


def _last_dim(shape: list[object]) -> int | None:
    dim = shape[-1] if shape else None
    return dim if isinstance(dim, int) else None


def encode_obs(waypoints: np.ndarray, max_waypoints: int, out: np.ndarray | None = None) -> np.ndarray:
    """(1, 4 * max_waypoints) float32 observation of one waypoint set: the task's `policy` group layout.

    Positions relative to the first waypoint, zero-padded to max_waypoints x 3, then a max_waypoints mask.
    `out` (a (1, 4 * max_waypoints) float32 array) is filled in place instead of allocating a new one.
    """
    w = np.asarray(waypoints, dtype=np.float64)
    n = len(w)
    obs = np.zeros((1, 4 * max_waypoints), dtype=np.float32) if out is None else out
    obs.fill(0.0)
    obs[0, : 3 * n] = (w - w[0]).reshape(-1)
    obs[0, 3 * max_waypoints : 3 * max_waypoints + n] = 1.0
    return obs


def durations_from_actions(actions: np.ndarray, heuristic: np.ndarray, max_ratio: float) -> np.ndarray:
    """Segment durations heuristic * max_ratio ** clip(action, -1, 1) (same shapes; padded segments stay 0)."""
    a = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
    return heuristic * np.exp(a * math.log(max_ratio))


def _floor_slack(rep: FeasibilityReport, waypoints: np.ndarray, limits: QuadLimits) -> float:
    """The height term of the feasibility margin (as `feasibility` normalises it); inf without a floor."""
    if limits.min_height is None:
        return math.inf
    return (rep.min_z - limits.min_height) / max(float(waypoints[:, 2].min()) - limits.min_height, 1e-3)


def stretch_to_feasible(spline: PolySpline, limits: QuadLimits, dt: float, *, min_margin: float = 0.0,
                        max_stretch: float = 4.0, tol: float = 0.01,
                        check: ScaledChecker | None = None) -> tuple[PolySpline, float, FeasibilityReport] | None:
    """Fastest common slow-down of a rest-to-rest plan that passes the check, or None when up to max_stretch none does.

    Slowing down by k divides accelerations by k^2 and jerks by k^3 and keeps the path, so the search runs on
    acceleration and jerk sampled once (`ScaledChecker`, all candidate scales at once): 1.25x steps up to
    max_stretch, then a few scales per pass inside the first feasible bracket down to (1 + tol). The answer is confirmed with
    `feasibility` itself, whose samples fall elsewhere on the slower timeline, growing 1 % at a time (at most
    10 times). Meant for a plan that fails the check at scale 1.

    Args:
        spline: Plan from rest to rest (zero velocity, acceleration and jerk at both ends).
        limits: Vehicle limits.
        dt: s, sampling period of the check.
        min_margin: Feasibility margin the stretched plan must reach.
        max_stretch: Largest common time scale tried.
        tol: Relative precision of the scale.
        check: The plan's `ScaledChecker` when the caller has one (its samples are reused), else made here.

    Returns:
        (stretched plan, scale, its feasibility report), or None.
    """
    check = check or ScaledChecker(spline, limits, dt)
    tol = max(tol, 1e-6)  # a zero tolerance would never end the refinement
    # Vectorised passes over scales instead of a serial search: 1.25x steps up to max_stretch, then a few
    # scales at a time inside the bracket that holds the first feasible one, until it is 1 + tol wide.
    coarse = np.minimum(1.25 ** np.arange(1, math.ceil(math.log(max_stretch) / math.log(1.25)) + 1), max_stretch)
    ok = np.flatnonzero(check.margins(coarse) >= min_margin)
    if not len(ok):
        return None
    hi = float(coarse[ok[0]])
    lo = float(coarse[ok[0] - 1]) if ok[0] > 0 else 1.0
    while hi / lo > 1.0 + tol:  # a few scales per pass (2 passes from 1.25 to 1 %), each pass one array operation
        n = min(_SCALES_PER_PASS, math.ceil(math.log(hi / lo) / math.log1p(tol)))
        grid = lo * (hi / lo) ** (np.arange(1, n) / n)  # inside (lo, hi): hi is known feasible
        ok = np.flatnonzero(check.margins(grid) >= min_margin)
        lo, hi = (float(grid[ok[0] - 1]) if ok[0] > 0 else lo, float(grid[ok[0]])) if len(ok) else (float(grid[-1]), hi)
    for _ in range(10):  # bounded: a re-plan must never stall the caller
        out = time_scaled(spline, hi)
        rep = feasibility(out, limits, dt)
        if rep.margin >= min_margin:
            return out, hi, rep
        if hi >= max_stretch:
            break
        hi = min(hi * 1.01, max_stretch)
    return None


def violation(rep: FeasibilityReport, limits: QuadLimits) -> str:
    """The tightest constraint of a report, in words (e.g. "thrust 112% of max")."""
    if limits.min_height is not None and rep.min_z < limits.min_height:
        return f"path dips to z={rep.min_z:.2f} m, below min_height {limits.min_height:g} m"
    worst = [((limits.max_total_thrust - rep.max_thrust) / limits.max_total_thrust,
              f"thrust {100.0 * rep.max_thrust / limits.max_total_thrust:.0f}% of max"),
             ((rep.min_thrust - limits.min_total_thrust) / limits.max_total_thrust,
              f"min thrust {rep.min_thrust:.3f} N vs the {limits.min_total_thrust:g} N limit"),
             ((limits.max_body_rate - rep.max_body_rate) / limits.max_body_rate,
              f"body rate {rep.max_body_rate:.1f} rad/s vs the {limits.max_body_rate:g} rad/s limit")]
    if limits.max_tilt is not None:
        worst.append(((limits.max_tilt - rep.max_tilt) / limits.max_tilt,
                      f"tilt {math.degrees(rep.max_tilt):.0f} deg vs the {math.degrees(limits.max_tilt):.0f} deg limit"))
    return min(worst)[1]


class Planner:
    """An exported waypoint planner, checked at load and run one waypoint set at a time.

    Args:
        policy_dir: Folder holding policy.onnx and policy.json, or the policy.onnx file itself.
        cfg: Runtime settings.

    Raises:
        MetadataError: policy.json missing or malformed (PlannerError: not a planner, or its graph's input or
            output width does not match the planner settings).
    """

    def __init__(self, policy_dir: str | Path, cfg: PlannerConfig | None = None) -> None:
        self.cfg = cfg or PlannerConfig()
        path = Path(policy_dir)
        onnx_path = path if path.suffix == ".onnx" else path / "policy.onnx"
        self.meta: PolicyMetadata = load_metadata(onnx_path.with_suffix(".json"))
        self.settings = PlannerSettings.from_metadata(self.meta, str(onnx_path.with_suffix(".json")))
        if not onnx_path.is_file():
            raise PlannerError(f"{onnx_path} not found; the planner export writes it beside policy.json")
        if self.cfg.dt is not None and not self.cfg.dt > 0:
            raise PlannerError(f"PlannerConfig.dt must be positive or None, got {self.cfg.dt}")
        if not self.cfg.max_stretch > 1.0:
            raise PlannerError(f"PlannerConfig.max_stretch must be > 1, got {self.cfg.max_stretch}")
        self.dt = self.cfg.dt if self.cfg.dt is not None else self.settings.feasibility_dt
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.cfg.threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        k = self.settings.max_waypoints
        self._obs = np.zeros((1, 4 * k), dtype=np.float32)  # reused: one allocation less per re-plan
        self._check_graph(onnx_path)

    @property
    def max_waypoints(self) -> int:
        """Largest waypoint count accepted."""
        return self.settings.max_waypoints

    @property
    def limits(self) -> QuadLimits:
        """Vehicle limits of the feasibility check."""
        return self.settings.limits

    def _check_graph(self, onnx_path: Path) -> None:
        """Refuse a graph whose widths do not fit max_waypoints, naming the mismatch; then run it once."""
        k, meta = self.settings.max_waypoints, self.meta
        obs_w, act_w = 4 * k, k - 1
        layout = f"max_waypoints={k} in policy.json's action"
        ins = {i.name: i.shape for i in self.session.get_inputs()}
        outs = {o.name: o.shape for o in self.session.get_outputs()}
        if meta.onnx_input not in ins or meta.onnx_output not in outs:
            raise PlannerError(f"{onnx_path} has inputs {list(ins)} and outputs {list(outs)}; policy.json names "
                               f"'{meta.onnx_input}' -> '{meta.onnx_output}'")
        for what, got, want in (("obs_dim in policy.json", meta.obs_dim, obs_w),
                                (f"input '{meta.onnx_input}' of {onnx_path.name}", _last_dim(ins[meta.onnx_input]), obs_w),
                                ("action_names in policy.json", len(meta.action_names), act_w),
                                (f"output '{meta.onnx_output}' of {onnx_path.name}", _last_dim(outs[meta.onnx_output]),
                                 act_w)):
            if got is not None and got != want:
                kind = "observation" if want == obs_w else "action"
                raise PlannerError(f"{what} has width {got} but {layout} needs {want} {kind} values "
                                   f"({'3 x k relative waypoints + k mask' if kind == 'observation' else 'one per segment'}); "
                                   "the planner and its settings do not match: re-export it")
        # A run on a two-waypoint set: catches widths a symbolic shape hides, and warms the session up.
        out = self._infer(np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0]]), full=True)
        if out.shape != (1, act_w):
            raise PlannerError(f"output '{meta.onnx_output}' of {onnx_path.name} has shape {out.shape} at run time but "
                               f"{layout} needs (1, {act_w}); re-export the planner")

    def observation(self, waypoints: np.ndarray) -> np.ndarray:
        """(1, 4 * max_waypoints) float32: the task's layout (see `encode_obs`), in a buffer reused across calls."""
        return encode_obs(waypoints, self.settings.max_waypoints, out=self._obs)

    def _infer(self, waypoints: np.ndarray, full: bool = False) -> np.ndarray:
        out = self.session.run([self.meta.onnx_output], {self.meta.onnx_input: self.observation(waypoints)})[0]
        return out if full else np.asarray(out, dtype=np.float64).reshape(-1)[: len(waypoints) - 1]

    def _timings(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """(heuristic durations, the network's durations (NaN where its output was not finite), inference s)."""
        st = self.settings
        # Computed exactly as in training: the network's actions are ratios to this allocation.
        heur = heuristic_durations(w, st.limits, dt=st.feasibility_dt, **st.heuristic)
        t0 = time.perf_counter()
        actions = self._infer(w)
        infer_s = time.perf_counter() - t0
        # An inf would clip to +-1 and pass for a timing: keep any non-finite output visible to the caller as NaN.
        planned = durations_from_actions(actions, heur, st.max_ratio)
        planned[~np.isfinite(actions)] = np.nan
        return heur, planned, infer_s

    def durations(self, waypoints: object) -> tuple[np.ndarray, np.ndarray]:
        """(heuristic, planned) segment durations before any feasibility repair, for inspection and tests.

        Raises:
            TrajectoryError: Bad waypoints (see `plan`).
        """
        w = check_waypoints(waypoints, max_count=self.settings.max_waypoints, min_separation=self.cfg.min_separation)
        heur, planned, _ = self._timings(w)
        return heur, planned

    def plan(self, waypoints: object) -> PlanResult:
        """Plan a trajectory through `waypoints`, made feasible when it can be.

        Args:
            waypoints: (n, 3) positions in metres, 2 <= n <= max_waypoints.

        Returns:
            A `PlanResult`; when `feasible` is False it must not be flown (`message` says why).

        Raises:
            TrajectoryError: Fewer than two waypoints, more than max_waypoints, a NaN/inf value, a duplicate,
                or not an (n, 3) array; the message says which and how to fix it.
        """
        start = time.perf_counter()
        cfg, st = self.cfg, self.settings
        w = check_waypoints(waypoints, max_count=st.max_waypoints, min_separation=cfg.min_separation)
        heur, planned, infer_s = self._timings(w)
        notes: list[str] = []
        tries: list[tuple[str, np.ndarray]] = [("heuristic", heur)]
        if np.isfinite(planned).all():
            tries.insert(0, ("planner", planned))
        else:
            notes.append("planner output not finite (NaN/inf); using the heuristic timing")
        feasible, scale = False, 1.0
        for label, durations in tries:
            spline = min_snap(w, durations)
            check = ScaledChecker(spline, st.limits, self.dt)
            rep = check.report()
            if rep.margin >= cfg.min_margin:
                feasible = True
                if not notes:
                    notes.append(f"{label} timing feasible (margin {rep.margin:.2f})")
                elif len(tries) == 2:  # the planner's timing failed above
                    notes.append(f"using the heuristic timing (feasible, margin {rep.margin:.2f})")
                break
            # Timing does not move the path: too close to the floor stays too close however slowly it is flown.
            floor_slack = _floor_slack(rep, w, st.limits)
            floor = floor_slack < cfg.min_margin
            if floor and floor_slack >= 0.0:  # above the floor, but nearer than min_margin allows
                why = f"path comes within {rep.min_z - st.limits.min_height:.2f} m of min_height {st.limits.min_height:g} m"
            else:
                why = violation(rep, st.limits)
            fixed = None if floor else stretch_to_feasible(spline, st.limits, self.dt, min_margin=cfg.min_margin,
                                                           max_stretch=cfg.max_stretch, tol=cfg.stretch_tol, check=check)
            if fixed is not None:
                spline, scale, rep = fixed
                feasible = True
                notes.append(f"{label} timing infeasible ({why}); stretched ×{scale:.2f}")
                break
            cannot = "no timing lifts the path" if floor else f"not even ×{cfg.max_stretch:g} slower fixes it"
            notes.append(f"{label} timing infeasible ({why}) and {cannot}")
        if not feasible:
            notes.append("no feasible plan: do not fly it")
        return PlanResult(spline=spline, durations=spline.durations, total_time=spline.total_time, feasible=feasible,
                          stretched=scale > 1.0, message="; ".join(notes), infer_s=infer_s,
                          total_s=time.perf_counter() - start, scale=scale, margin=rep.margin,
                          used_heuristic=label == "heuristic")
