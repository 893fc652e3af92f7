"""The `s2r` commands that use an exported run: tasks, eval (ONNX through onnxruntime), play with video."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from s2r.policies.cli import main
from s2r.sim import gym_id, task_ids


def test_tasks_lists_every_task(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for task in task_ids():
        assert task in out and gym_id(task) in out


def test_eval_prints_tracking_error_fall_rate_and_return(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tiny_run), "--episodes", "4", "--json"]) == 0
    out = capsys.readouterr().out
    for label in ("velocity tracking error", "fall rate", "mean return", "mean episode length"):
        assert label in out
    res = json.loads(out.strip().splitlines()[-1])
    assert res["episodes"] == 4 and 0.0 <= res["fall_rate"] <= 1.0
    assert np.isfinite([res["mean_return"], res["mean_vel_error"]]).all()


def test_eval_of_a_folder_without_a_policy_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path)]) == 2
    assert "holds no policy.onnx" in capsys.readouterr().err


def test_play_writes_an_mp4(tiny_run: Path, tmp_path: Path, renderer_or_skip: None,
                            capsys: pytest.CaptureFixture[str]) -> None:
    import imageio.v2 as imageio

    video = tmp_path / "walk.mp4"
    # Software GL renders ~0.15 s per 640x480 frame on a busy CPU: keep the clip to 10 frames.
    assert main(["play", str(tiny_run), "--video", str(video), "--seconds", "0.2", "--command", "0.5,0,0"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["steps"] == 10 and res["video"] == str(video)
    reader = imageio.get_reader(str(video))
    try:
        frames = [f for _, f in zip(range(100), reader, strict=False)]
    finally:
        reader.close()
    assert len(frames) == 10 and frames[0].shape == (480, 640, 3)
    assert frames[0].std() > 5  # a rendered scene, not a blank frame


def test_play_without_video_needs_no_renderer(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["play", str(tiny_run), "--seconds", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["video"] is None


@pytest.mark.parametrize("task", ["Go1-Velocity-Flat", "Puck-Velocity-Flat"])
def test_gym_rgb_array_render(task: str, renderer_or_skip: None) -> None:
    env = gymnasium.make(gym_id(task), render_mode="rgb_array")
    try:
        env.reset(seed=0)
        env.step(env.action_space.sample())
        frame = env.render()
    finally:
        env.close()
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8 and frame.std() > 5


@pytest.mark.parametrize(("argv", "words"), [
    (["train", "Puck-Velocity-Flat", "--algo", "ppp"], ["unknown algorithm 'ppp'", "ppo"]),
    (["train", "Crazyflie-Replan-Waypoints", "--algo", "ppo"], ["one-step bandit", "--algo mfrl"]),
    (["train", "Panda-Lift-Cube", "--algo", "bc", "--demos", "/nonexistent/demos"], ["/nonexistent/demos"]),
    (["train", "Puck-Velocity-Flat", "--base", "runs/x"], ["--base is a setting of", "not of --algo ppo"]),
    (["train", "Panda-Lift-Cube", "--algo", "residual"], ["needs --base"]),
    # --device only means something to the warp backend: ignored, the run would not be where it was asked to be
    (["train", "Puck-Velocity-Flat", "--device", "cuda:0"], ["setting of the warp backend", "--backend warp"]),
    # train-bc reuses `train` with a parser of its own (no --backend/--device): it must reach the demos check
    (["train-bc", "Panda-Lift-Cube", "--demos", "/nonexistent/demos"], ["/nonexistent/demos"]),
])
def test_train_refuses_bad_input_in_one_sentence(argv: list[str], words: list[str], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--runs", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("s2r: error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    assert not list(tmp_path.rglob("checkpoint.pt"))


def test_algos_lists_the_registered_algorithms(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["algos"]) == 0
    out = capsys.readouterr().out
    for algo in ("ppo", "bc", "residual", "finetune"):
        assert f"\n{algo} " in f"\n{out}", out


def test_resuming_a_run_as_another_algorithm_is_refused(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--resume", str(tiny_run), "--algo", "residual", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is a 'ppo' run, not 'residual'" in err and "Traceback" not in err


def test_an_image_group_on_a_vector_learner_is_refused(tmp_path: Path, renderer_or_skip: None,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "Panda-Lift-Cube", "--set", "image=true", "--set", "image_size=16,16", "--num-envs", "2",
            "--train-set", "algo.policy.actor_obs=policy,image", "--runs", str(tmp_path), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "ppo reads observation group 'image' of task 'Panda-Lift-Cube', which holds images (16, 16, 3)" in err
    assert "Traceback" not in err


def test_export_rebuilds_the_policy_from_the_checkpoint(tiny_run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tiny_run_copy / "policy.onnx").unlink()
    assert main(["export", str(tiny_run_copy)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["max_abs_diff"] <= 1e-5
    assert (tiny_run_copy / "policy.onnx").is_file()
    assert main(["export", str(tiny_run_copy / "nothing")]) == 2
    assert "not an s2r run folder" in capsys.readouterr().err
    (tiny_run_copy / "checkpoint.pt").unlink()
    assert main(["export", str(tiny_run_copy)]) == 2
    assert "has no checkpoint to export" in capsys.readouterr().err
