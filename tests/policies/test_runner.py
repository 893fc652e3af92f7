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
from s2r.policies.runner import CHECKPOINT, CheckpointError, load_checkpoint, save_atomic
from s2r.real.metadata import load_metadata

from tests.training_runs import REPO, TINY_ENVS, TINY_TASK, cli_env, s2r_command


def test_tiny_run_writes_every_artifact(tiny_run: Path) -> None:
    for name in (CHECKPOINT, "history.json", "config.json", "policy.onnx", "policy.json", "learning_curve.png"):
        assert (tiny_run / name).is_file(), name
    assert list(tiny_run.glob("events.out.tfevents.*"))
    assert not list(tiny_run.glob("*.tmp"))
    ckpt = load_checkpoint(tiny_run / CHECKPOINT, TINY_TASK)
    assert ckpt["iteration"] == 2 and len(json.loads((tiny_run / "history.json").read_text())) == 2
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
    per_iter = TINY_ENVS * load_checkpoint(run / CHECKPOINT)["train_cfg"]["algo"]["steps_per_env"]
    assert main(["train", TINY_TASK, "--resume", str(run), "--steps", str(4 * per_iter), "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-2])
    after = load_checkpoint(run / CHECKPOINT, TINY_TASK)
    assert before["iteration"] == 2
    assert after["iteration"] == result["iterations"] == 4 and after["env_steps"] == 4 * per_iter
    assert [h["iteration"] for h in after["history"]] == [1, 2, 3, 4]
    assert after["wall_time"] > before["wall_time"]
    assert not list(run.glob("*.tmp"))


def test_checkpoint_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT
    save_atomic({"task_id": "A-B-C", "n": 1}, path)
    assert load_checkpoint(path)["n"] == 1 and not list(tmp_path.glob("*.tmp"))
    good = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017  (whatever pickling raises)
        save_atomic({"task_id": "A-B-C", "n": 2, "bad": lambda: None}, path)
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
    assert result["interrupted"] is True and result["iterations"] >= 2
    ckpt = load_checkpoint(run / CHECKPOINT, TINY_TASK)
    assert ckpt["iteration"] == result["iterations"]
    assert (run / "policy.onnx").is_file()
    meta = load_metadata(run / "policy.json")
    assert meta.task_id == TINY_TASK and meta.obs_dim == 45
    assert not list(run.glob("*.tmp"))
