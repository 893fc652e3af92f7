"""Crazyflie model, SE(3) control in closed-loop MuJoCo flights, time allocation, the re-planning task, flight logs."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from s2r.real.trajectory import QuadLimits, feasibility, min_snap
from s2r.sim import gym_id, make, task_ids
from s2r.sim.models import load_crazyflie
from s2r.sim.quadrotor.allocation import heuristic_durations, optimise_durations
from s2r.sim.quadrotor.control import QuadrotorParams, SE3Controller, params_from_model
from s2r.sim.quadrotor.flight import FlightConfig, FlightResult, fly, read_flight_log

from tests.mcap_schemas import POSE_STAMPED

WAYPOINTS = np.array([[0, 0, 1.0], [1.0, 0.5, 1.4], [1.6, -0.4, 1.0], [0.8, -0.8, 1.5]])
LIMITS = QuadLimits(min_height=0.1)
NOMINAL = FlightConfig(mass_range=(1.0, 1.0), drag_range=(1.0, 1.0), motor_range=(1.0, 1.0))


def test_model_matches_published_values() -> None:
    m = load_crazyflie()
    assert m.nu == 4 and m.nq == 7
    p = params_from_model(m)
    assert p == QuadrotorParams()  # the controller's defaults are the model's values
    weight = p.mass * p.gravity
    assert 4 * p.max_motor_thrust / weight == pytest.approx(2.2, abs=0.01)
    assert np.hypot(*p.motor_xy[0]) == pytest.approx(0.046, abs=1e-3)
    assert sum(p.motor_yaw) == pytest.approx(0.0)  # yaw torques cancel at equal thrusts
    many = load_crazyflie(3)
    assert many.nu == 12 and many.nbody == 4
    assert params_from_model(many, prefix="cf2/") == p


def test_mixer_round_trip_and_saturation() -> None:
    ctl = SE3Controller()
    u = np.array([[0.3, 1e-4, -2e-4, 1e-5]])
    t = ctl.allocate(u)
    np.testing.assert_allclose(ctl.mix @ t[0], u[0], rtol=1e-9, atol=1e-12)
    # Too much collective: the torques survive, the collective gives way.
    hot = ctl.allocate(np.array([[0.7, 2e-4, 0.0, 0.0]]))
    assert hot.max() <= ctl.params.max_motor_thrust + 1e-12 and hot.min() >= 0.0
    assert (ctl.mix @ hot[0])[1] == pytest.approx(2e-4, rel=1e-6)


def test_tracks_feasible_and_fails_too_fast() -> None:
    slow_d = heuristic_durations(WAYPOINTS, LIMITS)
    fast_d = slow_d * 0.2
    slow, fast = min_snap(WAYPOINTS, slow_d), min_snap(WAYPOINTS, fast_d)
    assert feasibility(slow, LIMITS).feasible and not feasibility(fast, LIMITS).feasible
    res = fly([slow, fast], NOMINAL)
    assert all(isinstance(r, FlightResult) for r in res)
    ok, bad = res
    assert ok.success and not ok.crashed and ok.max_pos_error < NOMINAL.tracking_bound
    assert 0 < ok.rms_pos_error <= ok.max_pos_error
    assert ok.flight_time == pytest.approx(slow.total_time + NOMINAL.settle_s, abs=0.01)
    assert not bad.success and bad.max_pos_error > NOMINAL.tracking_bound


def test_results_do_not_depend_on_batching() -> None:
    d = heuristic_durations(WAYPOINTS, LIMITS)
    splines = [min_snap(WAYPOINTS, d * s) for s in (0.6, 0.8, 1.0)]
    splines = [min_snap(WAYPOINTS[:2], [0.8]), *splines]
    together = fly(splines, seed=3)
    alone = fly(splines, FlightConfig(vehicles_per_world=1), seed=3)
    for a, b in zip(together, alone, strict=True):  # equal up to the order of floating-point sums
        assert (a.success, a.crashed) == (b.success, b.crashed)
        np.testing.assert_allclose([a.max_pos_error, a.rms_pos_error, a.flight_time],
                                   [b.max_pos_error, b.rms_pos_error, b.flight_time], rtol=1e-9)
    assert fly(splines[:1], seed=4) != fly(splines[:1], seed=5)  # the seed drives the randomisation


def test_logged_flights_hold_what_a_motion_capture_log_would() -> None:
    d = heuristic_durations(WAYPOINTS, LIMITS)
    splines = [min_snap(WAYPOINTS, d), min_snap(WAYPOINTS, d * 0.2)]
    logs: list[tuple[np.ndarray, np.ndarray]] = []
    res = fly(splines, NOMINAL, seed=1, logs=logs)
    assert res == fly(splines, NOMINAL, seed=1)  # logging changes nothing
    (t0, p0), (t1, p1) = logs
    assert np.allclose(np.diff(t0), 0.01) and t0[-1] == pytest.approx(splines[0].total_time + NOMINAL.settle_s, abs=0.01)
    err = np.linalg.norm(p0 - splines[0].evaluate(t0), axis=1)
    assert err.max() == pytest.approx(res[0].max_pos_error, abs=0.01) and np.isfinite(p0).all()
    if res[1].crashed:  # the too-fast plan: NaN (lost) from the crash on, logged to its end
        assert np.isnan(p1[-1]).all() and t1[-1] == pytest.approx(splines[1].total_time + NOMINAL.settle_s, abs=0.01)


def test_hover_is_still() -> None:
    s = min_snap([[0, 0, 1.0], [0, 0, 1.01]], [1.0])
    (r,) = fly([s], NOMINAL)
    assert r.success and r.max_pos_error < 0.01


def test_optimiser_is_feasible_and_faster_than_heuristic() -> None:
    for method in ("scale", "descent", "slsqp"):
        res = optimise_durations(WAYPOINTS, LIMITS, method=method)
        heur = heuristic_durations(WAYPOINTS, LIMITS)
        assert res.feasible and res.margin >= 0.0
        assert feasibility(min_snap(WAYPOINTS, res.durations), LIMITS).feasible
        assert res.total_time < 0.9 * heur.sum(), method
        assert res.iterations > 0 and res.wall_s > 0
    scale = optimise_durations(WAYPOINTS, LIMITS, method="scale")
    descent = optimise_durations(WAYPOINTS, LIMITS, method="descent")
    assert descent.total_time <= scale.total_time + 1e-9  # per-segment steps only ever shorten
    with pytest.raises(ValueError, match="unknown method"):
        optimise_durations(WAYPOINTS, LIMITS, method="magic")  # type: ignore[arg-type]


def test_task_resets_and_steps() -> None:
    assert "Crazyflie-Replan-Waypoints" in task_ids()
    env = make("Crazyflie-Replan-Waypoints", 4, seed=0)
    obs = env.reset(seed=0)
    assert obs["policy"].shape == (4, 24) and obs["privileged"].shape == (4, 5)
    assert all(np.isfinite(v).all() and v.dtype == np.float32 for v in obs.values())
    mask = obs["policy"][:, 18:]
    assert ((mask.sum(axis=1) >= 3) & (mask.sum(axis=1) <= 6)).all()
    sets = env.waypoint_sets()
    obs, rew, term, trunc, info = env.step(np.zeros((4, 5), np.float32))  # the heuristic itself
    np.testing.assert_allclose(rew, -1.0, rtol=1e-6)
    assert term.all() and not trunc.any() and info["feasible"].all()
    assert [len(w) for w in info["waypoints"]] == [len(w) for w in sets]
    obs, rew, term, trunc, info = env.step(np.full((4, 5), -0.3, np.float32))  # 28 % faster
    assert np.isfinite(rew).all() and rew.dtype == np.float32
    assert ((rew == env.cfg.infeasible_reward) | (rew > -1.0)).all()
    np.testing.assert_array_equal(info["durations"] > 0, info["final_obs"]["privileged"] > 0)
    obs, rew, *_ = env.step(np.full((4, 5), np.nan, np.float32))  # NaN actions read as 0: the heuristic
    np.testing.assert_allclose(rew, -1.0, rtol=1e-6)
    genv = gymnasium.make(gym_id("Crazyflie-Replan-Waypoints"))
    o, _ = genv.reset(seed=1)
    o, r, te, _, _ = genv.step(genv.action_space.sample())
    assert o.shape == (24,) and np.isfinite(r) and te


def _write_csv(path: Path) -> None:
    t = np.linspace(0, 1, 11)
    rows = ["traj_id,t,x,y,z,x_ref,y_ref,z_ref"]
    for ti in t:  # flight 0: 5 cm off in x the whole time
        rows.append(f"0,{ti},{ti + 0.05},0,1,{ti},0,1")
    for ti in t:  # flight 1: error growing to 0.3 m
        rows.append(f"1,{ti},{ti},{0.3 * ti},1,{ti},0,1")
    rows.append("2,0.0,0,0,1,0,0,1")
    rows.append("2,0.1,,,,0,0,1")  # motion capture lost the vehicle
    path.write_text("\n".join(rows) + "\n")


def test_flight_log_csv(tmp_path: Path) -> None:
    path = tmp_path / "flights.csv"
    _write_csv(path)
    good, drift, lost = read_flight_log(path)
    assert good.success and good.max_pos_error == pytest.approx(0.05) and good.rms_pos_error == pytest.approx(0.05)
    assert good.flight_time == pytest.approx(1.0) and not good.crashed
    assert not drift.success and drift.max_pos_error == pytest.approx(0.3)
    assert drift.rms_pos_error == pytest.approx(0.3 * np.sqrt(np.mean(np.linspace(0, 1, 11) ** 2)))
    assert lost.crashed and not lost.success
    # A looser bound turns the drifting flight into a success.
    assert read_flight_log(path, FlightConfig(tracking_bound=0.35))[1].success
    bad = tmp_path / "bad.csv"
    bad.write_text("traj_id,t,x,y\n0,0,0,0\n")
    with pytest.raises(ValueError, match="missing column"):
        read_flight_log(bad)
    with pytest.raises(ValueError, match="unknown flight-log format"):
        read_flight_log(tmp_path / "log.bag")


def test_flight_log_mcap_json(tmp_path: Path) -> None:
    from mcap.writer import Writer

    path = tmp_path / "flights.mcap"
    with path.open("wb") as f:
        w = Writer(f)
        w.start()
        schema = w.register_schema(name="s2r.FlightSample", encoding="jsonschema", data=b"{}")
        ch = w.register_channel(topic="/s2r/flight", message_encoding="json", schema_id=schema)
        for i, ti in enumerate(np.linspace(0, 1, 11)):
            msg = {"traj_id": 0, "t": ti, "position": [ti, 0.02, 1.0], "reference": [ti, 0.0, 1.0]}
            w.add_message(ch, log_time=i, data=json.dumps(msg).encode(), publish_time=i)
        w.finish()
    (r,) = read_flight_log(path)
    assert r.success and r.max_pos_error == pytest.approx(0.02)




def test_flight_log_mcap_ros2(tmp_path: Path) -> None:
    from mcap_ros2.writer import Writer

    def pose(t: float, x: float, y: float) -> dict:
        sec = int(t)
        return {"header": {"stamp": {"sec": sec, "nanosec": round((t - sec) * 1e9)}, "frame_id": "world"},
                "pose": {"position": {"x": x, "y": y, "z": 1.0}, "orientation": {"x": 0, "y": 0, "z": 0, "w": 1}}}

    path = tmp_path / "rosbag.mcap"
    with path.open("wb") as f:
        w = Writer(f)
        schema = w.register_msgdef("geometry_msgs/msg/PoseStamped", POSE_STAMPED)
        for ti in np.linspace(10, 11, 21):  # reference at 20 Hz
            w.write_message("/reference", schema, pose(ti, ti - 10, 0.0), log_time=int(ti * 1e9))
        for ti in np.linspace(10, 11, 101):  # measured at 100 Hz, 4 cm off in y
            w.write_message("/pose", schema, pose(ti, ti - 10, 0.04), log_time=int(ti * 1e9))
        w.finish()
    (r,) = read_flight_log(path)
    assert r.success and r.max_pos_error == pytest.approx(0.04, abs=1e-6)
    assert r.flight_time == pytest.approx(1.0, abs=1e-6)
    assert not read_flight_log(path, FlightConfig(tracking_bound=0.03))[0].success
