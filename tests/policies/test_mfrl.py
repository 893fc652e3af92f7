"""Multi-fidelity RL planner: differentiable min-snap, the BoTorch estimator and acquisition, training, export.

Everything runs the real parts: BoTorch GPs, MuJoCo flights, onnxruntime. One tiny training run (two
rounds) is shared by the tests that need a trained planner.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from s2r.policies.algorithm import AlgorithmTaskMismatch
from s2r.policies.driver import (
    Budget,
    CheckpointError,
    RunDriver,
    RunSpec,
    export_run,
    load_checkpoint,
    new_run_spec,
    resume_run_spec,
)
from s2r.policies.mfrl import (
    TASK_ID,
    MFRLConfig,
    MFRLError,
    PlannerNet,
    PlannerNetConfig,
    WaypointSets,
    evaluate_planner,
    high_fidelity_score,
    is_planner_run,
    low_fidelity_score,
    sample_sets,
    splines_for,
    summary_lines,
)
from s2r.policies.mfrl.estimator import (
    FEATURES,
    HIGH,
    LOW,
    REAL,
    AcquisitionConfig,
    EstimatorConfig,
    FlyabilityEstimator,
    select_queries,
    torch_min_snap,
    trajectory_features,
)
from s2r.real.metadata import load_metadata
from s2r.real.planner import Planner, PlannerError, durations_from_actions, encode_obs, stretch_to_feasible, time_scaled
from s2r.real.trajectory import PolySpline, TrajectoryError, feasibility, min_snap
from s2r.sim import task_config
from s2r.sim.quadrotor.flight import fly, read_flight_log

TASK = task_config(TASK_ID)
EST = EstimatorConfig()


def _tiny_config(rounds: int = 2) -> MFRLConfig:
    return MFRLConfig(
        rounds=rounds, policy_steps=40, batch_size=64, train_sets=256, val_sets=64, init_low=60, init_high=12,
        export_parity_sets=16, seed=0,
        acquisition=AcquisitionConfig(queries_per_round=24, candidate_sets=16, perturbations=2, high_budget=24,
                                      reference_sets=48),
    )


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """What MFRLConfig.torch_threads does in a run: small tensors, and a second thread only spins on 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_planner(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A planner trained for two rounds; treat as read-only."""
    run_dir = tmp_path_factory.mktemp("mfrl") / "run"
    spec = RunSpec(algo="mfrl", task_id=TASK_ID, task_cfg=TASK, cfg=_tiny_config(), budget=Budget(steps=2))
    driver = RunDriver(spec, run_dir, progress=False)
    try:
        result = driver.learn()
    finally:
        driver.close()
    return run_dir, result


def _features(sets: WaypointSets, actions: np.ndarray) -> torch.Tensor:
    d = np.where(sets.heuristic > 0, durations_from_actions(actions, sets.heuristic, TASK.max_ratio), 1.0)
    return trajectory_features(torch.from_numpy(sets.waypoints), torch.from_numpy(sets.counts), torch.from_numpy(d),
                               TASK.limits, EST)


def _random_plans(n: int, seed: int, mean: float = -0.45, std: float = 0.3) -> tuple[WaypointSets, np.ndarray]:
    """Plans around 1/1.6 of the heuristic: some fly, some do not, at both fidelities."""
    sets = sample_sets(TASK, n, seed=seed)
    a = np.clip(np.random.default_rng(seed).normal(mean, std, (n, TASK.max_waypoints - 1)), -1, 1)
    return sets, a * (sets.heuristic > 0)


def _low(sets: WaypointSets, a: np.ndarray) -> np.ndarray:
    d = durations_from_actions(a, sets.heuristic, TASK.max_ratio)
    return np.array([low_fidelity_score(feasibility(s, TASK.limits)) for s in splines_for(sets, d)])


def _high(sets: WaypointSets, a: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    d = durations_from_actions(a, sets.heuristic, TASK.max_ratio)
    res = fly(splines_for(sets, d), seed=seed)
    return np.array([high_fidelity_score(r, 0.15) for r in res]), np.array([r.success for r in res])


@pytest.fixture(scope="module")
def estimator() -> FlyabilityEstimator:
    """A GP fitted on 120 low-fidelity checks and 30 flights (plus their low-fidelity twins)."""
    sl, al = _random_plans(120, seed=11)
    sh, ah = _random_plans(30, seed=12)
    est = FlyabilityEstimator(EST)
    est.add(_features(sl, al), LOW, torch.from_numpy(_low(sl, al)))
    fh = _features(sh, ah)
    est.add(fh, HIGH, torch.from_numpy(_high(sh, ah, seed=1)[0]))
    est.add(fh, LOW, torch.from_numpy(_low(sh, ah)))
    est.fit()
    return est


# ---- differentiable min-snap --------------------------------------------------------------------


def test_torch_min_snap_matches_numpy_and_features_match_the_flatness_check() -> None:
    rng = np.random.default_rng(0)
    for m in (1, 2, 5):
        w = rng.uniform(-2, 2, (4, m + 1, 3))
        T = rng.uniform(0.2, 3.0, (4, m))
        a = torch_min_snap(torch.from_numpy(w), torch.from_numpy(T)).numpy()
        for j in range(4):
            want = min_snap(w[j], T[j]).coeffs
            got = a[j] / T[j][:, None, None] ** np.arange(8)[None, :, None]  # normalised -> seconds
            np.testing.assert_allclose(got, want, atol=1e-8 * max(1.0, np.abs(want).max()))
    sets, a = _random_plans(24, seed=3)
    feats = _features(sets, a).numpy()
    margin = _low(sets, a)
    assert feats.shape == (24, len(FEATURES))
    # A fixed grid per segment instead of the check's 10 ms: near the feasibility boundary the two agree.
    near = np.abs(margin) < 0.15
    assert near.sum() >= 3
    np.testing.assert_allclose(feats[near, 0], margin[near], atol=0.015)
    assert np.mean((feats[:, 0] >= 0) == (margin >= 0)) >= 0.95
    assert np.corrcoef(feats[:, 0].clip(-1, 1), margin)[0, 1] > 0.98


def test_features_are_differentiable_in_the_durations() -> None:
    sets, a = _random_plans(3, seed=4)
    T0 = torch.from_numpy(np.where(sets.heuristic > 0, durations_from_actions(a, sets.heuristic, TASK.max_ratio), 1.0))
    w, c = torch.from_numpy(sets.waypoints), torch.from_numpy(sets.counts)

    def peak_speed(T: torch.Tensor) -> torch.Tensor:
        return trajectory_features(w, c, T, TASK.limits, EST)[:, 4].sum()

    T = T0.clone().requires_grad_(True)
    peak_speed(T).backward()
    grad = T.grad
    assert torch.isfinite(grad).all()
    # Against central differences through the same solve.
    step = 1e-6
    for i, j in ((0, 0), (1, 1), (2, 0)):
        e = torch.zeros_like(T0)
        e[i, j] = step
        fd = (peak_speed(T0 + e) - peak_speed(T0 - e)) / (2 * step)
        np.testing.assert_allclose(float(grad[i, j]), float(fd), rtol=1e-4, atol=1e-7)
    # Slowing the whole plan down lowers its peak speed: the trade a time-minimising policy makes.
    assert float((grad * T0 * torch.from_numpy(sets.heuristic > 0)).sum()) < 0


# ---- estimator and acquisition ------------------------------------------------------------------


def test_estimator_predicts_flights_well_above_chance_and_learns_the_fidelity_gap(estimator: FlyabilityEstimator) -> None:
    st, at = _random_plans(40, seed=13)
    flown, ok = _high(st, at, seed=2)
    with torch.no_grad():
        mean, _ = estimator.predict(_features(st, at), HIGH)
    mean = mean.numpy()
    majority = max(ok.mean(), 1 - ok.mean())
    assert 0.2 < ok.mean() < 0.95, "the held-out plans should hold both outcomes"
    accuracy = np.mean((mean > 0) == ok)
    assert accuracy >= min(majority + 0.15, 0.9), (accuracy, majority)
    # Rank quality (AUC): how often a flown plan is scored above one that failed.
    auc = np.mean(mean[ok][:, None] > mean[~ok][None, :])
    assert auc >= 0.85
    # The raw low-fidelity margin is on another scale (0.3 for a plan that flies with 1 cm error); the
    # estimator's high-fidelity prediction is closer to what the flights score.
    low = _low(st, at)
    assert np.mean(np.abs(mean - flown)) < np.mean(np.abs(low - flown))


def test_acquisition_picks_both_fidelities_within_the_budget(estimator: FlyabilityEstimator) -> None:
    sets, a = _random_plans(40, seed=14, std=0.4)
    cand = _features(sets, a)
    ref = _features(*_random_plans(32, seed=15))
    cfg = AcquisitionConfig(cost_low=1.0, cost_high=20.0)
    idx, fid, _ = select_queries(estimator, cand, ref, n_queries=30, high_left=3, cfg=cfg)
    assert len(idx) == 30 and set(np.unique(fid)) == {0, 1}
    assert 1 <= int(fid.sum()) <= 3
    assert len({(i, f) for i, f in zip(idx, fid, strict=True)}) == 30  # no query twice
    idx, fid, _ = select_queries(estimator, cand, ref, n_queries=10, high_left=0, cfg=cfg)
    assert len(idx) == 10 and fid.sum() == 0


def test_closed_form_acquisition_equals_botorch_integrated_variance(estimator: FlyabilityEstimator) -> None:
    from botorch.acquisition.active_learning import qNegIntegratedPosteriorVariance

    sets, a = _random_plans(12, seed=16, std=0.4)
    cand = _features(sets, a)
    ref = _features(*_random_plans(16, seed=17))
    cfg = AcquisitionConfig(cost_low=1.0, cost_high=20.0)
    idx, fid, val = select_queries(estimator, cand, ref, n_queries=2, high_left=5, cfg=cfg)
    x = [torch.cat([cand[i], torch.tensor([float(f)], dtype=torch.float64)]) for i, f in zip(idx, fid, strict=True)]
    cost = [cfg.cost_low + (cfg.cost_high - cfg.cost_low) * f for f in fid]
    mc = torch.cat([ref, torch.ones(len(ref), 1, dtype=torch.float64)], 1)
    model = estimator.model
    with torch.no_grad():
        before = -float(model.posterior(mc).variance.mean())
        first = float(qNegIntegratedPosteriorVariance(model, mc)(x[0].view(1, 1, -1)))
        second = float(qNegIntegratedPosteriorVariance(model, mc, X_pending=x[0].view(1, -1))(x[1].view(1, 1, -1)))
    # value * cost = integrated variance before minus after; qNIPV is minus the integrated variance after.
    np.testing.assert_allclose(val[0] * cost[0], first - before, rtol=2e-3, atol=1e-9)
    np.testing.assert_allclose(val[1] * cost[1], second - first, rtol=2e-3, atol=1e-9)


# ---- training, export, evaluation ---------------------------------------------------------------


def test_tiny_run_plans_faster_than_the_heuristic_and_stays_feasible(tiny_planner: tuple[Path, dict]) -> None:
    run_dir, result = tiny_planner
    assert result["progress"] == 2 and result["unit"] == "rounds" and not result["interrupted"]
    assert result["high_evals"] <= 24  # the budget, bootstrap included
    for name in ("checkpoint.pt", "history.json", "config.json", "policy.onnx", "policy.json", "learning_curve.png"):
        assert (run_dir / name).is_file(), name
    ckpt = load_checkpoint(run_dir / "checkpoint.pt", TASK_ID, "mfrl")
    fids = ckpt["state"]["estimator"]["X"][:, -1]
    assert int((fids == HIGH).sum()) == result["high_evals"]
    acquired = [(h["queries_low"], h["queries_high"]) for h in ckpt["history"]]
    assert sum(q[0] for q in acquired) > 0 and sum(q[1] for q in acquired) > 0  # both fidelities chosen
    ev = evaluate_planner(run_dir, n_sets=12, seed=4242, fly_baselines=False, timing_repeats=1)
    assert ev["time_vs_heuristic"] < 0.85, ev
    assert ev["low_fidelity_feasible"] == 1.0 and ev["low_fidelity_feasible_raw"] >= 0.75, ev
    assert ev["high_fidelity_success"] >= 0.75, ev
    assert ev["high_fidelity_evaluations"] == result["high_evals"]
    assert is_planner_run(run_dir)


def test_onnx_parity_and_metadata(tiny_planner: tuple[Path, dict]) -> None:
    run_dir, _ = tiny_planner
    ckpt = load_checkpoint(run_dir / "checkpoint.pt", TASK_ID, "mfrl")
    net = PlannerNet(TASK.max_waypoints, resume_run_spec(run_dir).cfg.planner).double()
    net.load_state_dict(ckpt["state"]["net"])
    obs = sample_sets(TASK, 32, seed=999).obs
    with torch.no_grad():
        want = net(torch.from_numpy(obs).double()).numpy()
    sess = ort.InferenceSession(str(run_dir / "policy.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(["actions"], {"obs": obs})[0]
    assert got.shape == (32, TASK.max_waypoints - 1)
    assert np.max(np.abs(got - want)) <= 1e-5
    assert np.abs(got).max() > 1e-3  # trained away from the all-heuristic start
    meta = load_metadata(run_dir / "policy.json")
    assert meta.obs_dim == 4 * TASK.max_waypoints
    assert [t.name for t in meta.obs.terms] == ["waypoints", "waypoint_mask"]
    assert len(meta.action_names) == TASK.max_waypoints - 1
    assert meta.schema_version == 2 and meta.algo == "mfrl" and meta.command.kind == "waypoints"
    assert meta.action.kind == "segment_time_ratio" and meta.action.max_ratio == TASK.max_ratio
    assert meta.action.max_waypoints == TASK.max_waypoints
    assert meta.planner is not None and meta.planner.feasibility_dt == TASK.feasibility_dt
    # The robot runtime reads this export: its timing is the torch network's through the shared rule.
    planner = Planner(run_dir)
    w = sample_sets(TASK, 1, seed=5).set(0)
    np.testing.assert_allclose(encode_obs(w, TASK.max_waypoints), sample_sets(TASK, 1, seed=5).obs)
    heur, planned = planner.durations(w)
    with torch.no_grad():
        a = net(torch.from_numpy(encode_obs(w, TASK.max_waypoints)).double()).numpy()[0, : len(w) - 1]
    np.testing.assert_allclose(planned, durations_from_actions(a, heur, TASK.max_ratio), rtol=2e-5)
    res = planner.plan(w)
    assert res.feasible and feasibility(res.spline, TASK.limits).feasible


def test_bad_planner_input_is_refused_clearly(tiny_planner: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, _ = tiny_planner
    planner = Planner(run_dir)
    for name in ("policy.onnx", "policy.json"):
        shutil.copy(run_dir / name, tmp_path / name)
    meta = json.loads((tmp_path / "policy.json").read_text())
    meta["action"]["max_waypoints"] = 5
    (tmp_path / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(PlannerError, match=r"obs_dim in policy.json has width 24 but max_waypoints=5 .* needs 20"):
        Planner(tmp_path)
    meta["action"]["max_waypoints"] = 6
    meta["planner"]["limits"]["max_thrust"] = 1.0
    (tmp_path / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(PlannerError, match=r"planner limits must map QuadLimits fields .* unknown: \['max_thrust'\]"):
        Planner(tmp_path)
    meta["planner"] = None
    (tmp_path / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(PlannerError, match=r"is not a waypoint planner export .*no planner section"):
        Planner(tmp_path)
    assert not is_planner_run(tmp_path)
    with pytest.raises(MFRLError, match="reads 24"):
        PlannerNet(6, PlannerNetConfig())(torch.zeros(2, 20))
    with pytest.raises(TrajectoryError, match="at most 6"):
        planner.plan(np.random.default_rng(0).uniform(0, 2, (7, 3)))
    with pytest.raises(TrajectoryError, match="shape"):
        planner.plan(np.zeros((4, 2)))


def test_stretch_to_feasible_stretches_a_too_fast_plan_exactly() -> None:
    sets = sample_sets(TASK, 4, seed=21)
    for i in range(4):
        w, h = sets.set(i), sets.heuristic[i, : sets.counts[i] - 1]
        fast = min_snap(w, 0.3 * h)
        assert not feasibility(fast, TASK.limits).feasible
        stretched = stretch_to_feasible(fast, TASK.limits, TASK.feasibility_dt)
        assert stretched is not None
        safe, scale, rep = stretched
        assert rep.feasible and 1.0 < scale < 3.4 and feasibility(safe, TASK.limits).feasible
        resolved = min_snap(w, scale * 0.3 * h)  # time scaling equals re-solving with scaled durations
        np.testing.assert_allclose(time_scaled(fast, scale).coeffs, resolved.coeffs, rtol=1e-6, atol=1e-9)


def _real_flight_log(path: Path, spline: PolySpline, offset: float) -> Path:
    """A motion-capture CSV of one flight that tracked `spline` with a constant offset (read_flight_log's format)."""
    t = np.arange(0.0, spline.total_time, 0.01)
    ref = spline.evaluate(t)
    rows = ["traj_id,t,x,y,z,x_ref,y_ref,z_ref"]
    rows += [f"0,{ti},{r[0] + offset},{r[1]},{r[2]},{r[0]},{r[1]},{r[2]}" for ti, r in zip(t, ref, strict=True)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_resume_with_a_logged_real_flight_then_reexport(tiny_planner: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, _ = tiny_planner
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = load_checkpoint(copy / "checkpoint.pt")
    driver = RunDriver(resume_run_spec(copy, budget=Budget(steps=3)), copy, resume=True, progress=False)
    runner = driver.algo
    # A third fidelity: a logged real flight of one plan (2 cm off its reference: a success).
    w = sample_sets(TASK, 1, seed=31).set(0)
    d = sample_sets(TASK, 1, seed=31).heuristic[0, : len(w) - 1] * 0.7
    results = read_flight_log(_real_flight_log(tmp_path / "log.csv", min_snap(w, d), 0.02))
    assert runner.add_logged_flights([w], [d], results) == 1
    out = driver.learn()
    driver.close()
    assert out["progress"] == 3 and len(driver.history) == 3
    n_before = len(before["state"]["estimator"]["X"])
    assert torch.equal(runner.estimator.X[:n_before], before["state"]["estimator"]["X"])
    assert runner.estimator.counts()["real"] == 1 and float(runner.estimator.X[n_before, -1]) == REAL
    assert out["high_evals"] <= 24
    with pytest.raises(CheckpointError, match="trained on task"):
        load_checkpoint(copy / "checkpoint.pt", "Go1-Velocity-Flat")
    with pytest.raises(MFRLError, match="one of each"):
        runner.add_logged_flights([w], [], results)
    # `s2r export` for a planner run: from the checkpoint alone.
    (copy / "policy.onnx").unlink()
    assert export_run(copy)["max_abs_diff"] <= 1e-5
    assert load_metadata(copy / "policy.json").info["rounds"] == 3
    ev = evaluate_planner(copy, n_sets=4, seed=5, fly_baselines=True, timing_repeats=1)
    assert len(summary_lines(ev)) == 8


def test_bad_mfrl_runs_are_refused_clearly(tmp_path: Path) -> None:
    from s2r.sim.config import ConfigError

    with pytest.raises(ConfigError, match="high_budjet"):
        new_run_spec("mfrl", TASK_ID, algo_overrides={"acquisition.high_budjet": 10})
    with pytest.raises(AlgorithmTaskMismatch, match="waypoint re-planning"):
        RunDriver(new_run_spec("mfrl", "Puck-Velocity-Flat"), tmp_path / "b")
    with pytest.raises(MFRLError, match=r"batch_size \(128\) is larger than train_sets \(64\)"):
        RunDriver(new_run_spec("mfrl", TASK_ID, algo_overrides={"train_sets": 64}), tmp_path / "d")
    with pytest.raises(MFRLError, match="smaller than init_high"):
        RunDriver(new_run_spec("mfrl", TASK_ID, algo_overrides={"acquisition.high_budget": 4}), tmp_path / "c")
    assert not any(tmp_path.iterdir())  # a refused config leaves no run folder behind
