"""Actuator identification from logs of a MuJoCo robot with hidden gains, latency and friction; bad logs."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from s2r.calibration.excite import ExciteConfig, check_excitation, generate_excitation, robot_limits, write_excitation
from s2r.calibration.logs import JointLog, read_log, write_csv_log, write_mcap_log
from s2r.calibration.schema import CalibrationError, load_calibration
from s2r.calibration.synthetic import DEFAULT_TRUTH, true_values
from s2r.calibration.sysid import PARAMS, SysIdConfig, SysIdResult, identify_actuators
from s2r.calibration.sysid_report import write_actuator_outputs

from tests.calibration.conftest import LEG


@pytest.fixture(scope="module")
def identified(leg_log_csv: Path) -> tuple[SysIdResult, float]:
    t0 = time.perf_counter()
    res = identify_actuators(read_log(leg_log_csv), SysIdConfig())
    return res, time.perf_counter() - t0


def test_hidden_values_recovered_within_5_percent(identified: tuple[SysIdResult, float], tmp_path: Path) -> None:
    res, elapsed = identified
    truth = true_values(DEFAULT_TRUTH)
    assert res.calibration.latency_s == pytest.approx(DEFAULT_TRUTH.latency_s, rel=0.05)
    worst = 0.0
    for g in res.calibration.groups:
        for p in PARAMS:
            err = abs(getattr(g, p) / truth[g.name][p] - 1)
            worst = max(worst, err)
            assert err < 0.05, f"{g.name}.{p}: {getattr(g, p):.5g} vs true {truth[g.name][p]:.5g}"
    # The identified model replays the log to within the sensor noise; the nominal one does not.
    assert res.after.rms_q < 0.1 * res.before.rms_q
    assert res.after.rms_q < 5e-4
    paths = write_actuator_outputs(res, tmp_path / "act.yaml")
    assert load_calibration(paths["yaml"], "actuators") == res.calibration
    assert "fit error" in paths["report"].read_text() and paths["figure"].stat().st_size > 10_000
    print(f"actuator sysid: {elapsed:.2f} s, worst parameter error {100 * worst:.2f} %")


def test_mcap_log_reads_like_the_csv(leg_log_csv: Path, tmp_path: Path) -> None:
    log = read_log(leg_log_csv)
    for kind in ("JointState", "Float64MultiArray"):
        bag = write_mcap_log(log, tmp_path / f"{kind}.mcap", command_type=kind)
        back = read_log(bag)
        assert back.joints == log.joints
        np.testing.assert_allclose(back.t, log.t, atol=1e-9)
        np.testing.assert_array_equal(back.target, log.target)
        np.testing.assert_allclose(back.q, log.q, atol=1e-12)
        np.testing.assert_allclose(back.tau, log.tau, atol=1e-12)


def test_gap_in_a_log_is_refused_with_the_fix(leg_log_csv: Path, tmp_path: Path) -> None:
    log = read_log(leg_log_csv)
    bag = write_mcap_log(log, tmp_path / "gap.mcap", drop=(2000, 2040))
    with pytest.raises(CalibrationError) as exc:
        read_log(bag)
    msg = str(exc.value)
    assert str(bag) in msg and "gap" in msg and "41.0 ms at t=1.999 s" in msg and "--start/--end" in msg
    assert len(read_log(bag, end=1.9).t) == 1901  # the fix it suggests works


def test_unknown_joint_is_named_with_a_suggestion(leg_log_csv: Path, tmp_path: Path) -> None:
    log = read_log(leg_log_csv)
    renamed = replace(log, joints=("FR_hip_joint", "FR_thigh_joint", "FR_knee_joint"))
    path = write_csv_log(renamed, tmp_path / "renamed.csv")
    with pytest.raises(CalibrationError) as exc:
        identify_actuators(read_log(path), SysIdConfig())
    msg = str(exc.value)
    assert str(path) in msg and "'FR_knee_joint'" in msg and "did you mean" in msg and "Rename" in msg


def test_command_and_state_joints_must_match(leg_log_csv: Path, tmp_path: Path) -> None:
    from mcap_ros2.writer import Writer
    from s2r.calibration import rosmsg

    log = read_log(leg_log_csv)
    bag = tmp_path / "mismatch.mcap"
    with bag.open("wb") as f:
        w = Writer(f)
        s = w.register_msgdef("sensor_msgs/msg/JointState", rosmsg.JOINT_STATE)
        for i in range(100):
            ns = 1_000_000_000 + i * 1_000_000
            h = {"stamp": rosmsg.stamp(ns), "frame_id": ""}
            w.write_message("/joint_commands", s, {"header": h, "name": ["FR_hip_joint", "FR_thigh_joint", "RL_calf_joint"],
                                                   "position": log.target[i].tolist(), "velocity": [], "effort": []}, ns, ns)
            w.write_message("/joint_states", s, {"header": h, "name": list(LEG), "position": log.q[i].tolist(),
                                                 "velocity": [], "effort": []}, ns + 1, ns + 1)
        w.finish()
    with pytest.raises(CalibrationError, match=r"mismatch.mcap: command joints .* do not match state joints .*only in "
                                               r"commands: \['RL_calf_joint'\]"):
        read_log(bag, command_topic="/joint_commands")
    with pytest.raises(CalibrationError, match=r"has no topic '/cmd'.*--command-topic"):
        read_log(bag, command_topic="/cmd")


def test_csv_problems(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("t,FR_hip_joint.target\n0,0\n")
    with pytest.raises(CalibrationError, match=r"a.csv: joint 'FR_hip_joint' has no FR_hip_joint.q column"):
        read_log(p)
    rows = "\n".join(f"{t},0,0" for t in [0.0, 0.001, 0.002, 0.001] + [0.003 + 0.001 * i for i in range(60)])
    p.write_text("t,j.target,j.q\n" + rows + "\n")
    with pytest.raises(CalibrationError, match=r"time does not increase at t=0.0020 s"):
        read_log(p)
    with pytest.raises(CalibrationError, match="no such log file"):
        read_log(tmp_path / "none.csv")


def test_excitation_stays_inside_the_limits(tmp_path: Path) -> None:
    limits = robot_limits("go1.xml")
    cfg = ExciteConfig(seconds=6.0)
    ex = generate_excitation(limits, cfg)
    assert ex.joints == limits.joints and len(ex.joints) == 12
    assert check_excitation(ex, limits, cfg) == []
    lo, hi = limits.lower + cfg.margin_rad, limits.upper - cfg.margin_rad
    assert (ex.target >= lo - 1e-9).all() and (ex.target <= hi + 1e-9).all()
    paths = write_excitation(ex, limits, cfg, tmp_path / "excite.csv")
    header = paths["trajectory"].read_text().splitlines()[0].split(",")
    assert header == ["t"] + [f"{j}.target" for j in limits.joints]
    np.testing.assert_allclose(np.loadtxt(paths["trajectory"], delimiter=",", skiprows=1)[:, 1:], ex.target, atol=1e-8)
    assert "safety check passed" in paths["report"].read_text()
    # A trajectory that leaves the safe range or jumps too far is caught.
    unsafe = ex.target.copy()
    unsafe[5000, 2] = limits.lower[2] - 0.05  # a spike out of range (and far too fast)
    unsafe[5000:5300, 1] += 0.5  # a step whose kp * jump exceeds 60 % of the thigh motor's torque
    problems = check_excitation(JointLog(source="x", joints=ex.joints, t=ex.t, target=unsafe, q=unsafe), limits, cfg)
    assert any(p.startswith("FR_calf_joint goes to") for p in problems)
    assert any(p.startswith("FR_calf_joint moves at") for p in problems)
    assert any(p.startswith("FR_thigh_joint jumps 0.500 rad") for p in problems)


def test_excitation_respects_the_robot_config(tmp_path: Path) -> None:
    """The safety limits of a robot.yaml (the ones the robot's safety layer enforces) tighten the model's."""
    joints = ("FR_hip_joint", "FR_thigh_joint", "FR_calf_joint")
    robot = tmp_path / "robot.yaml"
    robot.write_text(
        "name: go1\njoint_names: [FR_hip_joint, FR_thigh_joint, FR_calf_joint]\ncontrol_dt: 0.02\n"
        "joint_lower: [-0.3, -0.686, -2.818]\njoint_upper: [0.3, 4.501, -0.888]\n"
        "velocity_limit: 2.0\nmax_target_delta: 0.1\n")
    limits = robot_limits("go1.xml", joints, robot)
    assert limits.lower[0] == -0.3 and limits.upper[0] == 0.3 and limits.robot_config == str(robot)
    cfg = ExciteConfig(seconds=4.0)
    ex = generate_excitation(limits, cfg)
    d = np.abs(np.diff(ex.target, axis=0))
    assert d.max() <= 0.1 + 1e-9  # no step beyond the safety layer's largest target change
    assert (ex.target[:, 0] >= -0.2 - 1e-9).all() and (ex.target[:, 0] <= 0.2 + 1e-9).all()  # margin 0.1 inside +-0.3
    smooth = d[d < 1.05 * 2.0 * 0.001]
    assert smooth.max() <= 1.05 * 2.0 * 0.001  # chirp within 2 rad/s
    assert check_excitation(ex, limits, cfg) == []
    with pytest.raises(CalibrationError, match=r"robot.yaml: has no joint\(s\) \['FL_hip_joint'\]"):
        robot_limits("go1.xml", ("FL_hip_joint",), robot)
