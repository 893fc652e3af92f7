"""`s2r eval`'s straight-line check: sideways and yaw drift under a pure forward command."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from s2r.policies.cli import main
from s2r.policies.evaluate import evaluate_straight, straight_line

WALK = Path(__file__).resolve().parents[1] / "data" / "go1_walk"


class ArcEnv:
    """Bases that walk at 0.5 m/s along their heading while turning at `wz`, with a sideways slip `vy`."""

    def __init__(self, yaw0: np.ndarray, wz: float, vy: float) -> None:
        self.num_envs = len(yaw0)
        self.spec = SimpleNamespace(control_dt=0.02)
        self.yaw0, self.wz, self.vy = yaw0, wz, vy

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        self.pose = np.stack([np.full(self.num_envs, 3.0), np.full(self.num_envs, -1.0), self.yaw0], axis=1)
        return {"policy": np.zeros((self.num_envs, 1))}

    def planar_pose(self) -> np.ndarray:
        return self.pose.copy()

    def step(self, actions: np.ndarray) -> tuple:
        dt, yaw = 0.02, self.pose[:, 2]
        self.pose[:, 0] += (0.5 * np.cos(yaw) - self.vy * np.sin(yaw)) * dt
        self.pose[:, 1] += (0.5 * np.sin(yaw) + self.vy * np.cos(yaw)) * dt
        self.pose[:, 2] = (yaw + self.wz * dt + np.pi) % (2 * np.pi) - np.pi
        n = self.num_envs
        return {"policy": np.zeros((n, 1))}, np.zeros(n), np.zeros(n, bool), np.zeros(n, bool), {}


def test_drift_is_measured_in_each_start_heading_frame() -> None:
    # Headings near +-pi cross the wrap-around while turning; the result must not care.
    yaw0 = np.array([0.0, 1.0, np.pi - 0.01, -np.pi + 0.01])
    res = straight_line(lambda o: o, ArcEnv(yaw0, wz=0.0, vy=0.05), seconds=8.0, speed=0.5, seed=0)
    assert res.mean_forward_m == pytest.approx(4.0) and res.mean_abs_lateral_m == pytest.approx(0.4)
    assert res.lateral_drift_pct == pytest.approx(10.0) and res.mean_abs_heading_deg == pytest.approx(0.0, abs=1e-9)
    assert res.lateral_vel_error == pytest.approx(0.05) and res.forward_vel_error == pytest.approx(0.0, abs=1e-9)
    turn = straight_line(lambda o: o, ArcEnv(yaw0, wz=-0.02, vy=0.0), seconds=8.0, speed=0.5, seed=0)
    assert turn.mean_abs_heading_deg == pytest.approx(np.degrees(0.16)) and turn.yaw_rate_error == pytest.approx(0.02)
    # An arc of radius 25 m: 4 m along it ends 25 (1 - cos 0.16) m to the side (less 0.3% of Euler steps).
    assert turn.mean_abs_lateral_m == pytest.approx(25 * (1 - np.cos(0.16)), rel=1e-2)


def test_shipped_walking_policy_walks_the_commanded_distance() -> None:
    res = evaluate_straight(WALK, speed=0.5, distance_m=2.0, episodes=8)
    assert res.fall_rate == 0.0 and 1.6 < res.mean_forward_m < 2.2
    assert 0.0 <= res.mean_abs_lateral_m < 0.5 and np.isfinite(res.mean_abs_heading_deg)


def test_bad_straight_line_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="positive speed and distance"):
        evaluate_straight(WALK, speed=0.0)


def test_eval_reports_the_straight_line(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tiny_run), "--episodes", "2", "--straight-distance", "0.5", "--json"]) == 0
    out = capsys.readouterr().out
    for label in ("straight line: 0.5 m/s forward for 0.5 m", "sideways drift", "heading change", "yaw rate error",
                  "lateral velocity error"):
        assert label in out, out
    res = json.loads(out.strip().splitlines()[-1])
    assert res["straight"]["episodes"] == 2 and res["straight"]["seconds"] == pytest.approx(1.0)
    assert main(["eval", str(tiny_run), "--episodes", "2", "--no-straight"]) == 0
    assert "sideways drift" not in capsys.readouterr().out
