"""`MFRL`, the registered algorithm "mfrl": one round = fit the estimator, train the policy, query; its config.

The run driver owns the rest (run folder, budget in rounds, bar, TensorBoard, checkpoints, resume, export call).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from s2r.policies.algorithm import Algorithm, AlgorithmTaskMismatch, RunContext, register_algorithm
from s2r.policies.mfrl.estimator import (
    HIGH,
    LOW,
    REAL,
    AcquisitionConfig,
    EstimatorConfig,
    FlyabilityEstimator,
    MFRLError,
    select_queries,
    trajectory_features,
)
from s2r.policies.mfrl.export import export_planner
from s2r.policies.mfrl.network import PlannerNet, PlannerNetConfig
from s2r.policies.mfrl.sets import (
    TASK_ID,
    WaypointSets,
    high_fidelity_score,
    low_fidelity_score,
    sample_sets,
    splines_for,
)
from s2r.real.planner import durations_from_actions
from s2r.real.trajectory import QuadLimits, check_waypoints, feasibility
from s2r.sim.quadrotor.flight import FlightConfig, FlightResult, fly
from torch import nn


@dataclass(frozen=True, kw_only=True)
class MFRLConfig:
    """A multi-fidelity RL run.

    Attributes:
        rounds: Rounds of (fit estimator, train policy, query) in the run when `--steps` does not say; the
            learning-rate schedule spans the run's round budget.
        policy_steps: Policy gradient steps per round.
        batch_size: Waypoint sets per policy gradient step.
        lr: Adam learning rate of the policy in the first round.
        lr_final: Fraction of `lr` left in the last round (cosine decay over the rounds): the constraint
            boundary moves with every refit, and a smaller step at the end keeps the exported policy from
            chasing the last fit's noise.
        train_sets: Waypoint sets in the training pool (drawn from the task once).
        val_sets: Held-out sets scored every round (estimator predictions and the exact low fidelity).
        init_low: Low-fidelity checks of random plans before the first round.
        init_high: High-fidelity flights of random plans before the first round (from the budget).
        init_action_std: Std of the random initial actions around 0 (the heuristic), clipped to [-1, 1].
        high_target: Required lower confidence bound of the high-fidelity score (0.2: error <= 80 % of the bound).
        low_target: Required exact low-fidelity margin (the planner node's check rejects below 0).
        penalty: Weight of the constraint violations against the time ratio (an exact penalty: above the
            largest time-per-margin trade-off, the constrained optimum is a minimum of the penalised loss).
        lowfi_constraint: Also constrain the exact low-fidelity margin (cheap, differentiable) in training.
        seed: Seed of the task's waypoint draws, the network initialisation and the flights.
        save_every: Rounds between checkpoints (the driver also checkpoints every few minutes).
        torch_threads: Torch threads (0: leave the default). One by default: the tensors are small (a batch of
            waypoint sets, a GP of ~10^3 points) and a second thread mostly spins, badly so on a busy machine.
        export_parity_sets: Observations checked between torch and onnxruntime at export.
        estimator: GP settings.
        acquisition: Query settings.
        planner: Network settings.
        flight: High-fidelity flight settings.
        flights: Folder of logged real flights paired with their plans (`s2r.policies.mfrl.flights` formats),
            added as the highest fidelity at the start of the next round; `s2r train --resume RUN --flights DIR`
            sets it. A flight already in the run (same plan id) is not added twice.
        real_target: Once the run holds real flights, the policy's flyability constraint (and the validation
            prediction) reads the estimator at the REAL fidelity instead of the simulator's: real flights are
            the highest fidelity, the one the planner must satisfy.
    """

    rounds: int = 40
    policy_steps: int = 150
    batch_size: int = 128
    lr: float = 2e-3
    lr_final: float = 0.1
    train_sets: int = 2048
    val_sets: int = 256
    init_low: int = 200
    init_high: int = 24
    init_action_std: float = 0.5
    high_target: float = 0.2
    low_target: float = 0.02
    penalty: float = 5.0
    lowfi_constraint: bool = True
    seed: int = 0
    save_every: int = 1
    torch_threads: int = 1
    export_parity_sets: int = 64
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)
    planner: PlannerNetConfig = field(default_factory=PlannerNetConfig)
    flight: FlightConfig = field(default_factory=FlightConfig)
    flights: str = ""
    real_target: bool = True


@register_algorithm
class MFRL(Algorithm):
    """Trains a planning policy against a multi-fidelity reward estimator; `--steps` counts rounds."""

    algo_id = "mfrl"
    config_cls = MFRLConfig
    unit = "rounds"
    postfix = (("val_time_ratio", "time"), ("val_pred_high_ok", "ok"), ("val_low_feasible", "low"), ("high_evals", "hf"))
    description = "multi-fidelity RL: a waypoint-timing planner trained against a GP reward estimator (quadrotor)"

    def __init__(self, ctx: RunContext) -> None:
        from s2r.sim.tasks.quadrotor import ReplanConfig

        task_id, task_cfg, cfg = ctx.task_id, ctx.task_cfg, ctx.cfg
        if not isinstance(task_cfg, ReplanConfig):
            raise AlgorithmTaskMismatch(f"mfrl plans waypoint re-planning tasks ({TASK_ID}); task '{task_id}' has a "
                                        f"{type(task_cfg).__name__}")
        if cfg.acquisition.high_budget < cfg.init_high:
            raise MFRLError(f"acquisition.high_budget ({cfg.acquisition.high_budget}) is smaller than init_high "
                            f"({cfg.init_high}); raise the budget or lower init_high")
        if cfg.batch_size > cfg.train_sets:
            raise MFRLError(f"batch_size ({cfg.batch_size}) is larger than train_sets ({cfg.train_sets}); a policy batch "
                            "draws distinct training sets: lower batch_size or raise train_sets")
        self.task_id, self.task_cfg, self.cfg = task_id, task_cfg, cfg
        self.run_dir = ctx.run.path
        self.default_steps = cfg.rounds
        self.total_rounds = ctx.total or cfg.rounds
        self.checkpoint_every = cfg.save_every
        self.limits: QuadLimits = task_cfg.limits
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.k = task_cfg.max_waypoints
        self.log_ratio = math.log(task_cfg.max_ratio)
        # Disjoint seeds: training pool, validation sets, and fresh sets for queries each round.
        self.pool = sample_sets(task_cfg, cfg.train_sets, seed=cfg.seed * 7919 + 1)
        self.val = sample_sets(task_cfg, cfg.val_sets, seed=cfg.seed * 7919 + 2)
        self.net = PlannerNet(self.k, cfg.planner).double()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.estimator = FlyabilityEstimator(cfg.estimator)
        self.progress = 0
        self.flight_ids: set[int] = set()  # plan ids of the logged flights in the estimator's data
        self._flights_read = False  # cfg.flights is read once per process (after a resume's checkpoint load)
        self.real_gap = math.nan  # mean (real score - simulated prediction) of the last imported flights

    @property
    def round(self) -> int:
        return self.progress

    # -- pieces ------------------------------------------------------------------------------------

    def _tensors(self, sets: WaypointSets) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return (torch.from_numpy(sets.obs).double(), torch.from_numpy(sets.waypoints),
                torch.from_numpy(sets.counts), torch.from_numpy(sets.heuristic))

    def _durations(self, actions: torch.Tensor, heuristic: torch.Tensor) -> torch.Tensor:
        # Padded segments get a dummy 1 s so every solve stays well posed; features ignore them.
        return torch.where(heuristic > 0, heuristic * torch.exp(actions * self.log_ratio), torch.ones_like(heuristic))

    def features(self, sets: WaypointSets, actions: torch.Tensor) -> torch.Tensor:
        """Estimator features of the plans `actions` (n, max_waypoints - 1) for `sets`."""
        _, w, counts, heur = self._tensors(sets)
        return trajectory_features(w, counts, self._durations(actions, heur), self.limits, self.cfg.estimator)

    def act(self, sets: WaypointSets) -> torch.Tensor:
        """The policy's actions for `sets` (no gradient)."""
        with torch.no_grad():
            return self.net(torch.from_numpy(sets.obs).double())

    def evaluate_low(self, sets: WaypointSets, actions: np.ndarray) -> np.ndarray:
        """Exact low-fidelity scores of the plans."""
        d = durations_from_actions(actions, sets.heuristic, self.task_cfg.max_ratio)
        dt = self.task_cfg.feasibility_dt
        return np.array([low_fidelity_score(feasibility(s, self.limits, dt)) for s in splines_for(sets, d)])

    def evaluate_high(self, sets: WaypointSets, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """High-fidelity scores and successes of the plans: one closed-loop flight each."""
        d = durations_from_actions(actions, sets.heuristic, self.task_cfg.max_ratio)
        # A new flight seed per query batch: the randomised vehicle differs from flight to flight.
        seed = self.cfg.seed * 1_000_003 + self.estimator.counts()["high"]
        res = fly(splines_for(sets, d), self.cfg.flight, seed=seed)
        bound = self.cfg.flight.tracking_bound
        return np.array([high_fidelity_score(r, bound) for r in res]), np.array([r.success for r in res])

    def _query(self, sets: WaypointSets, actions: np.ndarray, fidelity: np.ndarray) -> np.ndarray:
        """Run the queries (fidelity 0/1 per plan), record them; returns the flight successes (NaN: not flown)."""
        feats = self.features(sets, torch.from_numpy(actions).double()).detach()
        ok = np.full(len(sets), np.nan)
        lo, hi = np.flatnonzero(fidelity == 0), np.flatnonzero(fidelity == 1)
        if len(lo):
            y = self.evaluate_low(sets.subset(lo), actions[lo])
            self.estimator.add(feats[lo], LOW, torch.from_numpy(y))
        if len(hi):
            y, ok[hi] = self.evaluate_high(sets.subset(hi), actions[hi])
            self.estimator.add(feats[hi], HIGH, torch.from_numpy(y))
        return ok

    def bootstrap(self) -> None:
        """Random plans around the heuristic at both fidelities, so the first fit has both to learn from."""
        cfg = self.cfg
        n = max(cfg.init_low, cfg.init_high)
        sets = sample_sets(self.task_cfg, n, seed=cfg.seed * 7919 + 3)
        a = np.clip(self.rng.normal(0.0, cfg.init_action_std, (n, self.k - 1)), -1.0, 1.0) * (sets.heuristic > 0)
        fid = np.zeros(n, dtype=np.int64)
        high = self.rng.permutation(n)[: cfg.init_high]
        fid[high] = 1
        self._query(sets, a, fid)
        # The flown plans' low-fidelity twins cost nothing and show the GP the fidelity gap at the same x.
        self._query(sets.subset(high), a[high], np.zeros(len(high), dtype=np.int64))

    def add_logged_flights(self, waypoints: list[np.ndarray], durations: list[np.ndarray],
                           results: list[FlightResult], fidelity: float = REAL) -> int:
        """Add flights flown outside the loop (e.g. `read_flight_log` of real flights) to the estimator's data.

        Args:
            waypoints: (n_i, 3) waypoints of each flown plan (at most max_waypoints each).
            durations: (n_i - 1,) segment durations of each plan.
            results: One `FlightResult` per plan, scored like the simulator's (same tracking bound).
            fidelity: GP fidelity coordinate of these flights (default REAL = 0.5).

        Returns:
            The number of flights added (they count in `counts()["real"]`, not against the flight budget).
        """
        feats = self._logged_features(waypoints, durations, results)
        y = [high_fidelity_score(r, self.cfg.flight.tracking_bound) for r in results]
        self.estimator.add(feats, fidelity, torch.tensor(y, dtype=torch.float64))
        return len(results)

    def _logged_features(self, waypoints: list[np.ndarray], durations: list[np.ndarray],
                         results: list[FlightResult]) -> torch.Tensor:
        """Estimator features of logged plans (checked: one waypoint set, duration set and result each)."""
        if not len(waypoints) == len(durations) == len(results):
            raise MFRLError(f"got {len(waypoints)} waypoint sets, {len(durations)} duration sets and {len(results)} "
                            "flight results; give one of each per logged flight")
        n, k = len(results), self.k
        w = np.zeros((n, k, 3))
        T = np.ones((n, k - 1))
        counts = np.zeros(n, dtype=np.int64)
        for i, (wi, di) in enumerate(zip(waypoints, durations, strict=True)):
            wi = check_waypoints(wi, max_count=k)
            di = np.asarray(di, dtype=np.float64).reshape(-1)
            if di.shape != (len(wi) - 1,) or not (di > 0).all():
                raise MFRLError(f"logged flight {i}: need {len(wi) - 1} positive segment durations, got {di.tolist()}")
            w[i, : len(wi)], T[i, : len(di)], counts[i] = wi, di, len(wi)
        with torch.no_grad():
            return trajectory_features(torch.from_numpy(w), torch.from_numpy(counts), torch.from_numpy(T), self.limits,
                                       self.cfg.estimator)

    def import_flights(self, folder: str | Path) -> dict[str, Any]:
        """Add a folder of logged flights (`read_flight_folder`) as the REAL fidelity; writes flights_report.json.

        Before adding them, the estimator (fitted on what the run had, simulation and checks) predicts each
        flight's high-fidelity score: the report's `real_minus_sim` says how far real flights sit from it.

        Returns:
            The report: folder, flights used, already in the run, skipped files (one sentence each),
            real_minus_sim (mean) and real_minus_sim_abs, and per flight its plan id, file, real and sim score.
        """
        from s2r.policies.mfrl.flights import read_flight_folder

        found = read_flight_folder(folder, self.cfg.flight)
        new = [f for f in found.flights if f.plan.plan_id not in self.flight_ids]
        report: dict[str, Any] = {"folder": str(folder), "used": len(new), "already_in_run": len(found.flights) - len(new),
                                  "skipped": found.skipped, "real_minus_sim": None, "real_minus_sim_abs": None,
                                  "flights": []}
        if new:
            feats = self._logged_features([f.plan.waypoints for f in new], [f.plan.durations for f in new],
                                          [f.result for f in new])
            real = np.array([high_fidelity_score(f.result, self.cfg.flight.tracking_bound) for f in new])
            if self.estimator.model is None and len(self.estimator.X):
                self.estimator.fit()
            with torch.no_grad():
                sim = self.estimator.predict(feats, HIGH)[0].numpy() if self.estimator.model is not None else real * np.nan
            self.estimator.add(feats, REAL, torch.from_numpy(real))
            self.flight_ids.update(f.plan.plan_id for f in new)
            self.real_gap = float(np.mean(real - sim))
            report.update(real_minus_sim=self.real_gap, real_minus_sim_abs=float(np.mean(np.abs(real - sim))),
                          flights=[{"plan_id": f.plan.plan_id, "file": f.source, "real": float(r), "sim": float(p)}
                                   for f, r, p in zip(new, real, sim, strict=True)])
        (self.run_dir / "flights_report.json").write_text(json.dumps(report, indent=2) + "\n")
        return report

    def _read_flights(self) -> dict[str, float]:
        """Import cfg.flights once per process; prints the report's summary and every skipped file."""
        if self._flights_read or not self.cfg.flights:
            return {}
        self._flights_read = True
        rep = self.import_flights(self.cfg.flights)
        for sentence in rep["skipped"]:
            print(f"s2r: {sentence}", flush=True)
        gap = "" if rep["real_minus_sim"] is None else (f"; real scores sit {rep['real_minus_sim']:+.3f} from the "
                                                          f"simulated prediction (mean |gap| {rep['real_minus_sim_abs']:.3f})")
        print(f"s2r: {rep['used']} real flights added from {rep['folder']} ({rep['already_in_run']} already in the run, "
              f"{len(rep['skipped'])} files skipped){gap}; see flights_report.json", flush=True)
        return {"real_flights_added": float(rep["used"]), "real_files_skipped": float(len(rep["skipped"]))}

    def target_fidelity(self) -> float:
        """The fidelity the policy must satisfy: REAL once the run holds real flights (and cfg.real_target), else HIGH."""
        return REAL if self.cfg.real_target and self.estimator.counts()["real"] else HIGH

    def policy_loss(self, sets: WaypointSets) -> tuple[torch.Tensor, dict[str, float]]:
        """Time ratio + penalty on the violated constraints, for a batch of sets."""
        cfg = self.cfg
        obs, w, counts, heur = self._tensors(sets)
        a = self.net(obs)
        T = self._durations(a, heur)
        valid = heur > 0
        ratio = (T * valid).sum(1) / heur.sum(1)
        feats = trajectory_features(w, counts, T, self.limits, cfg.estimator)
        mean, std = self.estimator.predict(feats, self.target_fidelity())
        lcb = mean - cfg.estimator.kappa * std
        viol = torch.relu(cfg.high_target - lcb)
        if cfg.lowfi_constraint:
            viol = viol + torch.relu(cfg.low_target - feats[:, 0])
        loss = (ratio + cfg.penalty * viol).mean()
        return loss, {"time_ratio": float(ratio.detach().mean()), "pred_high_ok": float((lcb.detach() > 0).double().mean()),
                      "violation": float(viol.detach().mean())}

    def train_policy(self) -> dict[str, float]:
        """`policy_steps` Adam steps on minibatches of the training pool."""
        self.net.train()
        cfg = self.cfg
        progress = self.round / max(self.total_rounds - 1, 1)
        lr = cfg.lr * (cfg.lr_final + (1.0 - cfg.lr_final) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))
        for group in self.opt.param_groups:
            group["lr"] = lr
        stats: dict[str, float] = {"lr": lr}
        step_stats: dict[str, float] = {}
        for _ in range(self.cfg.policy_steps):
            idx = self.rng.choice(len(self.pool), self.cfg.batch_size, replace=False)
            loss, step_stats = self.policy_loss(self.pool.subset(idx))
            self.opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
            self.opt.step()
        self.net.eval()
        stats.update(step_stats)
        return {f"train_{k}": v for k, v in stats.items()}

    def validate(self) -> dict[str, float]:
        """Policy on the validation sets: time ratio, estimator predictions, exact low-fidelity feasibility."""
        a = self.act(self.val)
        _, _, _, heur = self._tensors(self.val)
        ratio = (self._durations(a, heur) * (heur > 0)).sum(1) / heur.sum(1)
        with torch.no_grad():
            feats = self.features(self.val, a)
            mean, std = self.estimator.predict(feats, self.target_fidelity())
        low = self.evaluate_low(self.val, a.numpy())
        return {"val_time_ratio": float(ratio.mean()), "val_pred_high_mean": float(mean.mean()),
                "val_pred_high_ok": float((mean - self.cfg.estimator.kappa * std > 0).double().mean()),
                "val_low_feasible": float((low >= 0).mean())}

    def acquire(self) -> dict[str, float]:
        """Choose this round's queries with `select_queries` and run them."""
        cfg, acq = self.cfg, self.cfg.acquisition
        seed = cfg.seed * 7919 + 1000 + self.round
        cand_sets = sample_sets(self.task_cfg, acq.candidate_sets, seed=seed)
        base = self.act(cand_sets).numpy()
        reps = 1 + acq.perturbations
        sets = cand_sets.subset(np.tile(np.arange(len(cand_sets)), reps))
        noise = self.rng.normal(0.0, acq.perturb_std, (len(sets), self.k - 1))
        noise[: len(cand_sets)] = 0.0  # the policy's own plans are candidates as they are
        actions = np.clip(np.tile(base, (reps, 1)) + noise, -1.0, 1.0) * (sets.heuristic > 0)
        with torch.no_grad():
            cand = self.features(sets, torch.from_numpy(actions))
            ref_sets = self.val.subset(np.arange(min(acq.reference_sets, len(self.val))))
            ref = self.features(ref_sets, self.act(ref_sets))
        high_left = acq.high_budget - self.estimator.counts()["high"]
        idx, fid, _ = select_queries(self.estimator, cand, ref, acq.queries_per_round, high_left, acq)
        ok = self._query(sets.subset(idx), actions[idx], fid)
        stats = {"queries_low": float((fid == 0).sum()), "queries_high": float((fid == 1).sum())}
        if (fid == 1).any():
            stats["query_high_success"] = float(np.nanmean(ok))
        own = (fid == 1) & (idx < len(cand_sets))  # the first copy of each set is the policy's own plan
        if own.any():
            stats["policy_flight_success"] = float(ok[own].mean())
        return stats

    # -- one round ---------------------------------------------------------------------------------

    def iterate(self) -> dict[str, float]:
        """One round: fit the estimator, train the policy, validate, query (the first also bootstraps)."""
        import time

        t0 = time.perf_counter()
        if len(self.estimator.X) == 0:
            self.bootstrap()
        imported = self._read_flights()
        stats = dict(self.estimator.fit())
        stats.update(imported)
        t1 = time.perf_counter()
        stats.update(self.train_policy())
        t2 = time.perf_counter()
        stats.update(self.validate())
        stats.update(self.acquire())
        t3 = time.perf_counter()
        n = self.estimator.counts()
        self.progress += 1
        stats.update({"high_evals": float(n["high"]), "low_evals": float(n["low"]), "real_flights": float(n["real"]),
                      "fit_fraction": (t1 - t0) / (t3 - t0), "policy_fraction": (t2 - t1) / (t3 - t0)})
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optim": self.opt.state_dict(), "estimator": self.estimator.state(),
                "np_rng": self.rng.bit_generator.state, "flight_ids": sorted(self.flight_ids), "real_gap": self.real_gap}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["optim"])
        self.estimator.load(state["estimator"])
        self.rng.bit_generator.state = state["np_rng"]
        self.flight_ids = set(state.get("flight_ids", ()))  # absent in runs from before logged flights
        self.real_gap = float(state.get("real_gap", math.nan))

    def export(self) -> dict[str, float]:
        """policy.onnx + policy.json into the run folder, checked against onnxruntime."""
        n = self.estimator.counts()
        parity = sample_sets(self.task_cfg, self.cfg.export_parity_sets, seed=self.cfg.seed * 7919 + 4).obs
        return export_planner(self.net, self.task_id, self.task_cfg, self.run_dir, parity,
                              info={"high_fidelity_evaluations": n["high"], "low_fidelity_evaluations": n["low"],
                                      "rounds": self.round})

    def plot(self, history: list[dict[str, Any]], path: Path) -> bool:
        """learning_curve.png: time ratio, predicted and flown success, flights used, per round."""
        if not history:
            return False
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        h = [{**x, "round": x["progress"]} for x in history]
        r = [x["round"] for x in h]
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        axes[0].plot(r, [x["val_time_ratio"] for x in h])
        axes[0].set_title("total time / heuristic (validation)")
        axes[1].plot(r, [x["val_pred_high_ok"] for x in h], label="predicted (LCB > 0)")
        axes[1].plot(r, [x["val_low_feasible"] for x in h], label="low-fidelity feasible")
        for key, label in (("query_high_success", "queried flights (incl. perturbed)"),
                           ("policy_flight_success", "queried flights of the policy's plans")):
            flown = [(x["round"], x[key]) for x in h if key in x]
            if flown:
                axes[1].plot(*zip(*flown, strict=True), "o", ms=3, label=label)
        axes[1].set_title("success rate")
        axes[1].legend(fontsize=7)
        axes[2].plot(r, [x["high_evals"] for x in h], label="high (flights)")
        axes[2].plot(r, [x["low_evals"] / 10 for x in h], label="low / 10")
        axes[2].set_title("evaluations used")
        axes[2].legend(fontsize=7)
        for ax in axes:
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
        fig.suptitle(f"{self.task_id} (mfrl): {h[-1]['high_evals']:.0f} flights, {h[-1]['wall_time'] / 60:.1f} min")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return True
