"""bench/residual.py: seeds run in parallel merge into one summary with the no-collapse check per seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench_modules import load_bench


def _bench():
    return load_bench("residual")


def _result(path: Path, seed: int, curve: list[float], task: str = "Panda-Lift-Cube", steps: int = 20) -> Path:
    """A result file of one residual run evaluated every 5 steps; the actor starts after step 5."""
    rows = [{"env_steps": 5 * i, "success_rate": s, "wall_s": float(i)} for i, s in enumerate(curve)]
    run = {"final_success": curve[-1], "curve": rows, "wall_s": 10.0, "method": "residual", "seed": seed,
           "actor_starts_at_env_step": 5}
    path.write_text(json.dumps({"task": task, "steps": steps, "base_success": [0.8, 0.8, 0.8],
                                "base_success_mean": 0.8, "episodes": 100, "runs": {f"residual_seed{seed}": run}}))
    return path


def test_merge_unites_seeds_and_flags_the_seed_that_collapses(tmp_path: Path) -> None:
    bench = _bench()
    a = _result(tmp_path / "a.json", 1, [0.8, 0.8, 0.85, 0.9, 0.95])  # step 5 is before the actor: not counted
    b = _result(tmp_path / "b.json", 2, [0.8, 0.9, 0.7, 0.85, 0.85])  # 10 points below its step 0 at step 10
    out = bench.merge_results([a, b], str(tmp_path / "merged"))
    assert out.name == "merged_Panda-Lift-Cube.json" and out.with_suffix(".png").is_file()
    s = json.loads(out.read_text())["summary"]["residual"]
    assert s["seeds"] == 2 and s["final_mean"] == pytest.approx(0.9) and s["final_std"] == pytest.approx(0.05)
    per = s["per_seed"]
    assert per["seed"] == [1, 2]
    assert per["dip_below_step0"] == pytest.approx([-0.05, 0.1])
    assert per["no_collapse"] == [True, False]


def test_merge_refuses_mixed_tasks_and_duplicate_runs(tmp_path: Path) -> None:
    bench = _bench()
    a = _result(tmp_path / "a.json", 1, [0.8, 0.9])
    with pytest.raises(ValueError, match="mix tasks"):
        bench.merge_results([a, _result(tmp_path / "b.json", 2, [0.5, 0.5], task="Panda-Insert-Peg")], str(tmp_path / "m"))
    with pytest.raises(ValueError, match="more than one file"):
        bench.merge_results([a, _result(tmp_path / "c.json", 1, [0.8, 0.8])], str(tmp_path / "m"))
