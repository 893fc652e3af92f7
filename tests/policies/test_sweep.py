"""`s2r sweep`: settings x seeds as Ray tasks on a local Ray, each an ordinary run folder; bad keys fail before Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from s2r.policies.cli import main
from s2r.policies.sweep import SweepSpec, settings

TASK = "Puck-Velocity-Flat"


def test_grid_combinations() -> None:
    spec = SweepSpec(task_id=TASK, grid={"algo.learning_rate": ("1e-3", "3e-4"), "algo.epochs": ("2", "5")},
                     task_grid={"episode_s": ("2",)})
    names = [n for n, _a, _t in settings(spec)]
    assert len(names) == 4 and "algo.learning_rate=1e-3,algo.epochs=2,episode_s=2" in names
    assert settings(SweepSpec(task_id=TASK))[0] == ("default", {}, {})


def test_sweep_on_local_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    argv = ["sweep", TASK, "--seeds", "0", "1", "--grid", "algo.learning_rate=1e-3,1e-4", "--steps", "768",
            "--num-envs", "16", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    summary = json.loads((out / "sweep.json").read_text())
    assert [len(r["values"]) for r in summary["settings"]] == [2, 2]
    means = [r["mean"] for r in summary["settings"]]
    assert means == sorted(means, reverse=True)  # best first
    for row in summary["settings"]:
        for d in row["run_dirs"]:  # every run is an ordinary run folder
            assert (Path(d) / "policy.onnx").is_file() and (Path(d) / "checkpoint.pt").is_file()
            cfg = json.loads((Path(d) / "config.json").read_text())
            assert float(row["setting"].split("=")[1]) == cfg["algo_cfg"]["algo"]["learning_rate"]
    seeds = {json.loads((Path(d) / "config.json").read_text())["seed"] for d in summary["settings"][0]["run_dirs"]}
    assert seeds == {0, 1}


def test_bad_grid_key_fails_before_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", TASK, "--grid", "algo.learning_rat=1e-3", "--steps", "10", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "learning_rat" in err and "\n" not in err.strip()
    assert main(["sweep", TASK, "--out", str(tmp_path)]) == 2
    assert "--steps or --minutes" in capsys.readouterr().err
