"""`s2r` names tasks the way `s2r tasks` prints them: ids or gymnasium ids; sub-commands have their own help."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from s2r.policies.cli import main
from s2r.sim import canonical_task_id, get_task, gym_id
from s2r.sim.tasks.experts import expert_task_ids


def test_gym_id_names_the_registered_task() -> None:
    assert canonical_task_id(gym_id("Go1-Velocity-Flat")) == "Go1-Velocity-Flat"
    assert get_task("s2r/Puck-Velocity-Flat-v0").task_id == "Puck-Velocity-Flat"
    # Not a registered task behind the namespace: left alone, so the lookup names it and the close ones.
    assert canonical_task_id("s2r/Go1-Velocity-Flatt-v0") == "s2r/Go1-Velocity-Flatt-v0"


def test_train_accepts_the_gym_id_that_s2r_tasks_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", gym_id("Puck-Velocity-Flat"), "--steps", "64", "--num-envs", "2", "--runs", str(tmp_path),
            "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    (run,) = (tmp_path / "Puck-Velocity-Flat").iterdir()  # the run folder is named by the task id
    assert json.loads((run / "config.json").read_text())["task_id"] == "Puck-Velocity-Flat"
    assert (run / "policy.onnx").is_file()


def test_train_with_a_gym_id_still_refuses_what_does_not_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", gym_id("Crazyflie-Replan-Waypoints"), "--algo", "ppo", "--runs", str(tmp_path),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "one-step bandit" in err and "unknown task" not in err, err


def test_demos_collect_help_is_its_own(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["demos", "collect", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: s2r demos collect") and "--failure-rate" in out and "--noise" in out


def test_demos_for_a_task_without_an_expert_names_the_tasks_that_have_one(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demos", "collect", "Puck-Velocity-Flat", "--out", str(tmp_path / "d"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert expert_task_ids() == ["Panda-Drawer-Cube", "Panda-Drawer-Cube-Privileged", "Panda-Insert-Peg", "Panda-Lift-Cube",
                                 "Panda-Lift-FlatBox", "Panda-Lift-FlatBox-Privileged", "Panda-PickPlace-Cube"]
    assert all(t in err for t in expert_task_ids()), err
    assert "Env" not in err and len(err.strip().splitlines()) == 1, err  # task ids, not class names
    assert not (tmp_path / "d").exists()  # refused before anything was built or written
