"""The curriculum's thresholds as bench options: the state machine at round 6's advance threshold (30 %), and a
run resumed with new thresholds keeps its stage and window from the checkpoint and takes the thresholds from the
new config (bench/privileged.py --resume --advance-at 0.3)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import pytest
import torch
from s2r.policies.curriculum import ADVANCE, FALL_BACK, HOLD, Curriculum, CurriculumConfig
from s2r.policies.driver import Budget, load_checkpoint, new_run_spec, resume_run_spec, train
from s2r.sim.tasks.manipulation import VirtualWrench

from tests.bench_modules import load_bench


def test_state_machine_at_a_30_percent_advance() -> None:
    cur = Curriculum(CurriculumConfig(stages=(1.0, 0.5, 0.0), window=64, advance_at=0.3, fall_back_below=0.05))
    # Round 5's window at its 618k checkpoint: 18 of 64 (28 %), below 0.3: hold.
    assert cur.observe([False] * 46 + [True] * 18) == HOLD and cur.stage == 0
    # Two more successes push the last 64 to 20 (31 %): advance, which the default 0.6 would not.
    assert cur.observe([True, True]) == ADVANCE and cur.stage == 1
    assert cur.observe([True] * 19 + [False] * 45) == HOLD and cur.stage == 1  # 19/64 = 29.7 %: hold
    assert cur.observe([False] * 61 + [True] * 3) == FALL_BACK and cur.stage == 0  # 3/64 = 4.7 % < 5 %
    slow = Curriculum(CurriculumConfig(stages=(1.0, 0.5, 0.0), window=64))
    assert slow.observe([True] * 38 + [False] * 26) == HOLD  # 59 % under the default 0.6


def test_restored_state_takes_the_new_thresholds() -> None:
    old = Curriculum(CurriculumConfig(stages=(1.0, 0.5, 0.0), window=8, advance_at=0.6))
    assert old.observe([False] * 5 + [True] * 3) == HOLD  # 37.5 % < 60 %
    new = Curriculum(CurriculumConfig(stages=(1.0, 0.5, 0.0), window=8, advance_at=0.3))
    new.load_state_dict(json.loads(json.dumps(old.state_dict())))
    assert new.stage == 0 and list(new.window) == list(old.window)
    # One more success: 4 of the last 8 (50 %), under the old 60 % and over the new 30 %.
    assert old.observe([True]) == HOLD and new.observe([True]) == ADVANCE and new.stage == 1


@pytest.mark.slow  # two short PPO runs with export: ~12 s of CPU, 25 s on the loaded machine
def test_bench_resume_keeps_the_stage_and_takes_the_new_thresholds(tmp_path) -> None:
    torch.manual_seed(0)
    bench = load_bench("privileged")
    # A window longer than the 64 env steps of the first part: no decision before the resume.
    overrides = {"torch_threads": 1, "algo.steps_per_env": 8, "curriculum.window": 100, "curriculum.stages": "1.0,0.5,0.0"}
    spec = new_run_spec("ppo-privileged", "Panda-Lift-FlatBox-Privileged", task_overrides={"backend.num_threads": 1},
                        algo_overrides=overrides, num_envs=4, seed=0, budget=Budget(steps=4 * 8 * 2))
    # An ungated wrench: random actions lift the box often (episodes of a few steps).
    tcfg = spec.task_cfg
    spec = replace(spec, task_cfg=replace(tcfg, privileged=(VirtualWrench(reach_radius=0.0), *tcfg.privileged[1:])))
    run = tmp_path / "run"
    train(spec, run, progress=False)
    saved = load_checkpoint(run / "checkpoint.pt")["state"]["curriculum"]
    assert saved["stage"] == 0 and 8 <= len(saved["window"]) < 100 and sum(saved["window"][-8:]) >= 3

    args = argparse.Namespace(window=8, advance_at=0.3, fall_back_below=0.02)
    thresholds = bench.curriculum_thresholds(args)
    assert thresholds == {"curriculum.window": 8, "curriculum.advance_at": 0.3, "curriculum.fall_back_below": 0.02}
    resumed = resume_run_spec(run, algo="ppo-privileged", budget=Budget(steps=4 * 8 * 3), algo_overrides=thresholds)
    cur = resumed.cfg.curriculum
    assert (cur.advance_at, cur.fall_back_below, cur.window, cur.stages) == (0.3, 0.02, 8, (1.0, 0.5, 0.0))
    assert (cur.fades, resumed.cfg.algo.steps_per_env) == ((), 8)  # the rest of the saved config is kept
    summary = train(resumed, run, resume=True, progress=False)
    # The last 8 episodes it resumed with were already >= 30 %: the first decision after the resume advances.
    assert summary["progress"] == 4 * 8 * 3 and summary["steps_to_stage_1"] == 4 * 8 * 3
    assert json.loads((run / "config.json").read_text())["algo_cfg"]["curriculum"]["advance_at"] == 0.3
