"""Runs: checkpoints are atomic and task-checked, resuming continues the count, Ctrl-C saves and exports."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from s2r.policies.cli import main
from s2r.policies.driver import Budget, CheckpointError, RunDriver, load_checkpoint, resume_run_spec, save_atomic, train
from s2r.real.metadata import load_metadata

from tests.training_runs import REPO, TINY_ENVS, TINY_TASK, cli_env, s2r_command, tiny_run_spec

CHECKPOINT = "checkpoint.pt"
PER_ITER = TINY_ENVS * 24  # env steps per PPO iteration of the tiny runs


def test_tiny_run_writes_every_artifact(tiny_run: Path) -> None:
    for name in (CHECKPOINT, "history.json", "config.json", "policy.onnx", "policy.json", "learning_curve.png"):
        assert (tiny_run / name).is_file(), name
    assert list(tiny_run.glob("events.out.tfevents.*"))
    assert not list(tiny_run.glob("*.tmp"))
    ckpt = load_checkpoint(tiny_run / CHECKPOINT, TINY_TASK)
    assert ckpt["algo"] == "ppo" and ckpt["state"]["iteration"] == 2
    assert len(json.loads((tiny_run / "history.json").read_text())) == 2
    assert load_metadata(tiny_run / "policy.json").task_id == TINY_TASK


def test_checkpoint_from_another_task_is_refused(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tiny_run / CHECKPOINT, "Go1-Velocity-Rough")
    assert f"'{TINY_TASK}'" in str(err.value) and "'Go1-Velocity-Rough'" in str(err.value)

    assert main(["train", "Go1-Velocity-Rough", "--resume", str(tiny_run), "--no-progress"]) == 2
    msg = capsys.readouterr().err
    assert TINY_TASK in msg and "Go1-Velocity-Rough" in msg and "Traceback" not in msg


def test_unreadable_checkpoints_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / CHECKPOINT)
    (tmp_path / CHECKPOINT).write_bytes(b"half a file")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / CHECKPOINT)
    torch.save({"weights": 1}, tmp_path / CHECKPOINT)
    with pytest.raises(CheckpointError, match="not an s2r checkpoint"):
        load_checkpoint(tmp_path / CHECKPOINT)


def test_resume_continues_the_iteration_count(tiny_run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tiny_run_copy
    before = load_checkpoint(run / CHECKPOINT, TINY_TASK)
    per_iter = TINY_ENVS * json.loads((run / "config.json").read_text())["algo_cfg"]["algo"]["steps_per_env"]
    assert main(["train", TINY_TASK, "--resume", str(run), "--steps", str(4 * per_iter), "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-2])
    after = load_checkpoint(run / CHECKPOINT, TINY_TASK)
    assert before["state"]["iteration"] == 2
    assert after["state"]["iteration"] == 4 and after["progress"] == result["progress"] == 4 * per_iter
    assert [h["progress"] for h in after["history"]] == [per_iter, 2 * per_iter, 3 * per_iter, 4 * per_iter]
    assert after["wall_time"] > before["wall_time"]
    assert not list(run.glob("*.tmp"))


def test_checkpoint_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT
    save_atomic({"format": 2, "algo": "ppo", "task_id": "A-B-C", "n": 1}, path)
    assert load_checkpoint(path)["n"] == 1 and not list(tmp_path.glob("*.tmp"))
    good = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017  (whatever pickling raises)
        save_atomic({"format": 2, "algo": "ppo", "task_id": "A-B-C", "n": 2, "bad": lambda: None}, path)
    assert path.read_bytes() == good  # the old checkpoint is untouched
    assert not list(tmp_path.glob("*.tmp"))


def test_interrupted_run_saves_and_exports(tmp_path: Path) -> None:
    """Ctrl-C mid-training: exit code 130, a loadable checkpoint and a valid export."""
    run = tmp_path / "run"
    cmd = s2r_command("train", TINY_TASK, "--num-envs", "32", "--steps", "10000000", "--run-dir", str(run),
                      "--no-progress", "--train-set", "save_every=2")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=cli_env())
    try:
        deadline = time.monotonic() + 120
        # A checkpoint appears after two iterations; wait for it, proving training is under way.
        while not (run / CHECKPOINT).is_file():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted" in out + err
    result = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert result["interrupted"] is True and result["progress"] >= 2 * 32 * 24
    ckpt = load_checkpoint(run / CHECKPOINT, TINY_TASK)
    assert ckpt["progress"] == result["progress"]
    assert (run / "policy.onnx").is_file()
    meta = load_metadata(run / "policy.json")
    assert meta.task_id == TINY_TASK and meta.obs_dim == 45
    assert not list(run.glob("*.tmp"))


def test_ppo_run_without_a_checkpoint_has_nothing_to_resume_unless_restarted(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    spec = tiny_run_spec(iterations=1)
    RunDriver(spec, run, progress=False).close()  # built, config written, killed before any iteration
    assert (run / "config.json").is_file() and not (run / CHECKPOINT).exists()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "has no checkpoint" in err and "--restart" in err and "Traceback" not in err
    assert main(["train", "--resume", str(run), "--restart", "--no-progress"]) == 0
    assert load_checkpoint(run / CHECKPOINT, TINY_TASK)["progress"] == PER_ITER


def test_checkpoints_follow_the_wall_clock_as_well_as_steps(tmp_path: Path) -> None:
    # save_every far away, checkpoint_minutes tiny: every iteration is a time checkpoint.
    spec = tiny_run_spec(iterations=3, save_every=1000)
    from dataclasses import replace

    driver = RunDriver(replace(spec, checkpoint_minutes=1e-6), tmp_path / "run", progress=False)
    saves = []
    real_save = driver.save

    def counting_save():
        saves.append(driver.algo.progress)
        return real_save()

    driver.save = counting_save
    try:
        driver.learn()
    finally:
        driver.close()
    assert saves == [PER_ITER, 2 * PER_ITER, 3 * PER_ITER, 3 * PER_ITER]  # three on time, one at the end


def test_killed_during_a_checkpoint_write_the_previous_checkpoint_still_loads(tiny_run_copy: Path) -> None:
    run = tiny_run_copy
    good = load_checkpoint(run / CHECKPOINT, TINY_TASK)
    # What a kill in the middle of save_atomic leaves: a partial temp file beside the intact checkpoint.
    (run / (CHECKPOINT + ".tmp")).write_bytes((run / CHECKPOINT).read_bytes()[:100])
    spec = resume_run_spec(run, budget=Budget(steps=good["progress"] + PER_ITER))
    res = train(spec, run, resume=True, progress=False)
    assert res["resumed"].startswith(f"resumed from the checkpoint at {good['progress']:,}")
    assert load_checkpoint(run / CHECKPOINT)["progress"] == good["progress"] + PER_ITER


def test_a_run_from_before_the_driver_resumes_or_is_refused_with_a_reason(tiny_run_copy: Path, tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    # A PPO run as the earlier version wrote it: format-1 checkpoint, config.json with a "train" section.
    run = tiny_run_copy
    new = torch.load(run / CHECKPOINT, weights_only=False)
    cfg = json.loads((run / "config.json").read_text())
    torch.save({"format": 1, "task_id": TINY_TASK, "task_cfg": cfg["task"], "train_cfg": cfg["algo_cfg"],
                "algo": new["state"]["algo"], "iteration": 2, "env_steps": 2 * PER_ITER, "wall_time": new["wall_time"],
                "history": new["history"], "torch_rng": new["torch_rng"]}, run / CHECKPOINT)
    (run / "config.json").write_text(json.dumps({"task_id": TINY_TASK, "task": cfg["task"], "train": {
        **cfg["algo_cfg"], "max_env_steps": 2 * PER_ITER, "max_minutes": 0.0}}))
    assert main(["train", "--resume", str(run), "--steps", str(3 * PER_ITER), "--no-progress"]) == 0
    assert load_checkpoint(run / CHECKPOINT)["progress"] == 3 * PER_ITER
    # A residual run of the earlier version carried its state in its own layout: refused, saying why.
    old = tmp_path / "old_residual"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"task_id": "Panda-Lift-Cube", "task": {}, "residual": {}, "base": "x"}))
    torch.save({"task_id": "Panda-Lift-Cube", "kind": "residual", "learner": {}}, old / CHECKPOINT)
    capsys.readouterr()
    assert main(["train", "--resume", str(old), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "written before the run driver" in err and "start a new run" in err and "Traceback" not in err


def test_ppo_trains_on_a_gymnasium_env_with_the_box_mapping_in_policy_json(tmp_path: Path) -> None:
    from s2r.policies.driver import new_run_spec

    # No `privileged` group in a gymnasium env: the asymmetric critic falls back to what the env offers.
    spec = new_run_spec("ppo", "gym:Pendulum-v1", num_envs=8, budget=Budget(steps=2 * 8 * 24),
                        algo_overrides={"export_parity_steps": 3})
    res = train(spec, tmp_path / "run", progress=False)
    assert res["progress"] == 2 * 8 * 24 and res["export"]["max_abs_diff"] <= 1e-5
    meta = json.loads((tmp_path / "run" / "policy.json").read_text())
    assert meta["algo"] == "ppo" and meta["action"]["kind"] == "box" and meta["action"]["scale"] == [2.0]
