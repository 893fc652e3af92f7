"""Logged flights paired with their plans by plan id (s2r.policies.mfrl.flights) and added to a run from the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from s2r.policies.cli import main as cli_main
from s2r.policies.driver import Budget, RunDriver, RunSpec, load_checkpoint, resume_run_spec
from s2r.policies.mfrl import TASK_ID, MFRLConfig
from s2r.policies.mfrl.estimator import HIGH, REAL, AcquisitionConfig
from s2r.policies.mfrl.flights import FlightLogError, LoggedPlan, read_flight_folder, write_flight_csv, write_plans
from s2r.policies.mfrl.sets import sample_sets
from s2r.real.trajectory import min_snap
from s2r.sim import task_config

from tests.mcap_schemas import POSE_STAMPED, STRING

TASK = task_config(TASK_ID)
SETTLE = 0.5


def _plans(n: int, seed: int = 3) -> list[LoggedPlan]:
    sets = sample_sets(TASK, n, seed=seed)
    return [LoggedPlan(plan_id=1_700_000_000_000_000_000 + 10**11 * i + seed, waypoints=sets.set(i),  # 100 s apart
                       durations=sets.heuristic[i, : sets.counts[i] - 1] * 0.8) for i in range(n)]


def _flight(plan: LoggedPlan, offset: float, until: float | None = None) -> tuple[int, np.ndarray, np.ndarray]:
    """Samples every 10 ms from the plan's start to `until` (default its end + settle), `offset` m off in x."""
    s = min_snap(plan.waypoints, plan.durations)
    t = np.arange(0.0, (s.total_time + SETTLE) if until is None else until, 0.01)
    return plan.plan_id, t, s.evaluate(t) + [offset, 0.0, 0.0]


def test_csv_flights_pair_with_their_plans_and_score_like_the_simulator(tmp_path: Path) -> None:
    plans = _plans(3)
    write_plans(tmp_path / "plans.jsonl", plans)
    write_flight_csv(tmp_path / "a.csv", [_flight(plans[0], 0.03), _flight(plans[1], 0.3)])
    write_flight_csv(tmp_path / "b.csv", [_flight(plans[2], 0.0)])
    found = read_flight_folder(tmp_path)
    assert found.skipped == []
    assert [f.plan.plan_id for f in found.flights] == [p.plan_id for p in plans]
    good, off, exact = (f.result for f in found.flights)
    assert good.success and good.max_pos_error == pytest.approx(0.03, abs=1e-4)
    assert not off.success and off.max_pos_error == pytest.approx(0.3, abs=1e-4)
    assert exact.success and exact.max_pos_error < 1e-4
    np.testing.assert_allclose(found.flights[0].plan.durations, plans[0].durations)


def _one_sentence(msg: str, name: str, *words: str) -> None:
    assert name in msg and msg.count("\n") == 0 and msg.endswith("skipped"), msg
    for w in words:
        assert w in msg, msg


def test_malformed_truncated_and_unpaired_logs_are_skipped_whole(tmp_path: Path) -> None:
    plans = _plans(4)
    write_plans(tmp_path / "plans.jsonl", plans[:3])  # plans[3] was never recorded
    write_flight_csv(tmp_path / "good.csv", [_flight(plans[0], 0.02)])
    (tmp_path / "malformed.csv").write_text("id,time,x,y,z\n1,0.0,0,0,1\n")
    cut = tmp_path / "cut.csv"  # the logger died mid-row: its good flight must not be used either
    write_flight_csv(cut, [_flight(plans[1], 0.0)])
    cut.write_text(cut.read_text()[:-20])
    write_flight_csv(tmp_path / "short.csv", [_flight(plans[0], 0.0), _flight(plans[2], 0.0, until=1.0)])
    write_flight_csv(tmp_path / "unpaired.csv", [_flight(plans[1], 0.0), _flight(plans[3], 0.0)])
    found = read_flight_folder(tmp_path)
    assert [(f.plan.plan_id, Path(f.source).name) for f in found.flights] == [(plans[0].plan_id, "good.csv")]
    msgs = {Path(m.split(":")[0].split(",")[0]).name: m for m in found.skipped}
    assert sorted(msgs) == ["cut.csv", "malformed.csv", "short.csv", "unpaired.csv"]
    _one_sentence(msgs["malformed.csv"], "malformed.csv", "expected plan_id,t,x,y,z")
    _one_sentence(msgs["cut.csv"], "cut.csv", "cut-off")
    _one_sentence(msgs["short.csv"], "short.csv", f"plan {plans[2].plan_id}", "truncated")
    _one_sentence(msgs["unpaired.csv"], "unpaired.csv", f"plan id {plans[3].plan_id}", "cannot be paired")
    with pytest.raises(FlightLogError, match="no such folder"):
        read_flight_folder(tmp_path / "nope")




def _recording(path: Path, plans: list[LoggedPlan], offset: float, replaced: LoggedPlan | None = None) -> Path:
    """What the recorder writes: the planner's JSON status (with the plan) and the measured PoseStamped.

    `replaced`: a plan published (status only) and re-planned before its end, flown by no pose of its own.
    """
    from mcap_ros2.writer import Writer

    with path.open("wb") as f:
        w = Writer(f)
        string = w.register_msgdef("std_msgs/msg/String", STRING)
        pose = w.register_msgdef("geometry_msgs/msg/PoseStamped", POSE_STAMPED)
        for p in ([replaced] if replaced else []) + plans:
            plan = {"id": p.plan_id, "waypoints": p.waypoints.tolist(), "durations": p.durations.tolist()}
            status = {"feasible": True, "published": True, "plan_id": p.plan_id, "plan": plan}
            w.write_message("/planner_status", string, {"data": json.dumps(status)}, log_time=p.plan_id)
            if p is replaced:
                continue
            _, t, pos = _flight(p, offset)
            for ti, q in zip(t, pos, strict=True):
                ns = p.plan_id + round(ti * 1e9)
                msg = {"header": {"stamp": {"sec": ns // 10**9, "nanosec": ns % 10**9}, "frame_id": "world"},
                       "pose": {"position": {"x": q[0], "y": q[1], "z": q[2]},
                                "orientation": {"x": 0, "y": 0, "z": 0, "w": 1}}}
                w.write_message("/pose", pose, msg, log_time=ns)
        w.finish()
    return path


def test_recorder_mcap_pairs_poses_with_the_plans_in_its_status(tmp_path: Path) -> None:
    plans = _plans(2)
    first = _plans(1, seed=5)[0]
    replaced = LoggedPlan(plan_id=plans[0].plan_id - 10**9, waypoints=first.waypoints, durations=first.durations + 1.0)
    _recording(tmp_path / "flight.mcap", plans, 0.04, replaced=replaced)  # re-planned 1 s into its 3+ s
    broken = _recording(tmp_path / "broken.mcap", _plans(1, seed=9), 0.0)
    broken.write_bytes(broken.read_bytes()[: len(broken.read_bytes()) // 2])  # recording cut off mid-write
    found = read_flight_folder(tmp_path)
    assert [f.plan.plan_id for f in found.flights] == [p.plan_id for p in plans]
    assert all(f.result.success and f.result.max_pos_error == pytest.approx(0.04, abs=1e-6) for f in found.flights)
    (msg,) = found.skipped
    _one_sentence(msg, "broken.mcap", "unreadable MCAP")


def _tiny_config() -> MFRLConfig:
    return MFRLConfig(rounds=2, policy_steps=20, batch_size=64, train_sets=256, val_sets=64, init_low=60, init_high=12,
                      export_parity_sets=16, seed=0,
                      acquisition=AcquisitionConfig(queries_per_round=16, candidate_sets=16, perturbations=2,
                                                    high_budget=20, reference_sets=32))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("mfrl_flights") / "run"
    spec = RunSpec(algo="mfrl", task_id=TASK_ID, task_cfg=TASK, cfg=_tiny_config(), budget=Budget(steps=1))
    driver = RunDriver(spec, run_dir, progress=False)
    try:
        driver.learn()
    finally:
        driver.close()
    return run_dir


@pytest.mark.slow  # ~20 s with its fixture; test_mfrl's resume-with-a-logged-flight covers the path
def test_s2r_train_resume_with_flights_adds_them_as_the_real_fidelity(tiny_run: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    logs = tmp_path / "logs"
    logs.mkdir()
    plans = _plans(3, seed=11)
    write_plans(logs / "plans.jsonl", plans)
    write_flight_csv(logs / "day1.csv", [_flight(p, 0.05) for p in plans])
    (logs / "bad.csv").write_text("plan_id,t,x,y,z\n")
    n_before = len(load_checkpoint(run / "checkpoint.pt")["state"]["estimator"]["X"])
    assert cli_main(["train", "--resume", str(run), "--flights", str(logs), "--steps", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "bad.csv: no samples after the header; skipped" in out
    assert "3 real flights added" in out and "real scores sit" in out
    report = json.loads((run / "flights_report.json").read_text())
    assert report["used"] == 3 and len(report["skipped"]) == 1 and np.isfinite(report["real_minus_sim"])
    assert [f["plan_id"] for f in report["flights"]] == [p.plan_id for p in plans]
    assert all(f["real"] == pytest.approx(1 - 0.05 / 0.15, abs=1e-3) for f in report["flights"])
    state = load_checkpoint(run / "checkpoint.pt")["state"]
    X = state["estimator"]["X"]
    assert int((X[n_before:, -1] == REAL).sum()) == 3 and state["flight_ids"] == sorted(p.plan_id for p in plans)
    history = json.loads((run / "history.json").read_text())
    assert history[-1]["real_flights"] == 3
    # Real flights are the highest fidelity: the policy's constraint now reads the estimator there.
    driver = RunDriver(resume_run_spec(run), run, resume=True, progress=False)
    assert driver.algo.target_fidelity() == REAL
    driver.close()
    driver = RunDriver(resume_run_spec(run, algo_overrides={"real_target": False}), run, resume=True, progress=False)
    assert driver.algo.target_fidelity() == HIGH
    driver.close()
    # The same folder again adds nothing twice; a missing folder is refused in one sentence.
    assert cli_main(["train", "--resume", str(run), "--flights", str(logs), "--steps", "3", "--no-progress"]) == 0
    assert "0 real flights added" in capsys.readouterr().out
    assert int((load_checkpoint(run / "checkpoint.pt")["state"]["estimator"]["X"][:, -1] == REAL).sum()) == 3
    assert cli_main(["train", "--resume", str(run), "--flights", str(tmp_path / "none")]) == 2
    assert "--flights" in capsys.readouterr().err
