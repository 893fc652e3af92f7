"""Issue 18, round 4: training-map levels for bench/confined.py, continuing a run for extra steps, the first
round's skills input kept behind `skills_height_obs`, and evaluation refusing a policy whose inputs differ."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from s2r.sim import make, task_config
from s2r.sim.tasks.confined import ConfinedWaypointConfig
from s2r.sim.terrain.confined import EVAL_SEEDS

from tests.bench_modules import load_bench


def test_difficulty_sets_by_name_or_list_and_bad_ones_named() -> None:
    bench = load_bench("confined")
    hard = bench.parse_difficulties("hard")
    assert len(hard) == 16 and hard.count(1.0) == 8 and min(hard) == 0.0
    assert bench.parse_difficulties("default") == bench.TRAIN_DIFFICULTIES
    assert bench.parse_difficulties("0.5,1") == (0.5, 1.0)
    with pytest.raises(ValueError, match="--difficulties 'hardest' is neither one of"):
        bench.parse_difficulties("hardest")
    with pytest.raises(ValueError, match="must lie in"):
        bench.parse_difficulties("0.5,1.5")


def test_first_round_skills_input_is_the_wanted_body_height() -> None:
    task = "Go1-Skills-Confined"
    cfg = task_config(task)
    cfg = replace(cfg, map_seed=EVAL_SEEDS[0], difficulty=1.0, skills_height_obs="body_height_command",
                  randomization=replace(cfg.randomization, observation_noise=0.0, push_velocity=0.0))
    env = make(task, 2, cfg=cfg, seed=0)
    try:
        obs = env.reset(seed=0)
        terms = list(env.spec.groups["policy"].terms)
        names = [t.name for t in terms]
        assert "body_height_command" in names and "crouch_command" not in names
        start = sum(t.size for t in terms[: names.index("body_height_command")])
        env.wp_index[:] = [0, int(np.argmin(env.wp_body_z[1, : env.wp_count[1]]))]  # env 1 at a crouch waypoint
        obs, *_ = env.step(np.zeros((2, 12)))
        got = obs["policy"][:, start] / 4.0
        np.testing.assert_allclose(got, env.wp_body_z[[0, 1], env.wp_index], atol=1e-6)
        assert got[1] == pytest.approx(cfg.planner.crouch_body_z) and got[0] == pytest.approx(cfg.planner.stand_body_z)
    finally:
        env.close()
    with pytest.raises(ValueError, match="skills_height_obs 'height' is not one of"):
        ConfinedWaypointConfig(skills_height_obs="height")


def test_evaluation_refuses_a_policy_that_reads_other_inputs(tmp_path) -> None:
    bench = load_bench("confined")
    task = "Go1-Skills-Confined"
    env = make(task, 1, cfg=replace(task_config(task), map_seed=EVAL_SEEDS[0]), seed=0)
    try:
        terms = [{"name": t.name, "size": t.size} for t in env.spec.groups["policy"].terms]
        (tmp_path / "policy.json").write_text(json.dumps({"observation": [{"group": "policy", "terms": terms}]}))
        have = [t.name for t in env.spec.groups["policy"].terms]
        bench.check_terms(tmp_path, have)  # the same inputs pass
        terms[3]["name"] = "body_height_command"
        (tmp_path / "policy.json").write_text(json.dumps({"observation": [{"group": "policy", "terms": terms}]}))
        with pytest.raises(ValueError, match="skills_height_obs"):
            bench.check_terms(tmp_path, have)
    finally:
        env.close()


@pytest.mark.slow
def test_extra_steps_continue_a_run_from_its_checkpoint_on_other_maps(tmp_path) -> None:
    bench = load_bench("confined")
    first = bench.train("waypoints", 48, 5.0, tmp_path, 2, 0, difficulties=(0.0,))
    assert first["env_steps"] == 48
    more = bench.train("waypoints", 10**6, 5.0, tmp_path, 2, 0, difficulties=(1.0, 1.0), extra_steps=48)
    assert more["env_steps"] == 96 and more["continued_from"]["env_steps"] == 48
    assert more["difficulties"] == [1.0, 1.0]
    config = json.loads((tmp_path / "waypoints" / "config.json").read_text())
    assert config["task"]["difficulties"] == [1.0, 1.0] and config["budget"]["steps"] == 96
    skills = tmp_path / "skills"
    bench.train("skills", 48, 5.0, tmp_path, 2, 0, difficulties=(0.0,),
                 init=bench.WALKER, overrides={"skills_height_obs": "body_height_command"})
    with pytest.raises(ValueError, match=r"reads .*body_height_command.* but the task config builds .*crouch_command"):
        bench.train("skills", 48, 5.0, tmp_path, 2, 0, difficulties=(0.0,), init=bench.WALKER, extra_steps=48)
    assert json.loads((skills / "config.json").read_text())["task"]["skills_height_obs"] == "body_height_command"


def test_evaluation_maps_can_start_past_the_first_and_stay_within_the_held_out_set() -> None:
    bench = load_bench("confined")
    assert bench.step_maps(5, first=20) == bench.step_maps(25)[20:]
    with pytest.raises(ValueError, match=r"--first-map 90 \+ --maps 25 must lie within the 100 held-out maps"):
        bench.evaluate(bench.REPO / "tests" / "data" / "go1_confined", 1.0, 25, first=90)


def _eval_json(first: int, ok: list[int], ends: list[str], t: float | None) -> dict:
    n = len(ok)
    outcomes = {"counts": {c: ends.count(c) for c in ("success", "fall", "stall", "slow")}, "fall_at_low_ceiling": 1,
                "stall_at_low_ceiling": 0, "ceiling_contact_episodes": 1, "under_low_ceiling_episodes": n,
                "ceiling_contact_s_mean": 0.5, "min_height_under_low_ceiling_m": [0.2] * n, "per_episode": ends}
    level = {"level": 1.0, "maps": n, "seconds": 30.0, "success": sum(ok) / n, "fall_rate": ends.count("fall") / n,
             "time_to_goal_s": t, "mean_progress": 0.5, "per_map_success": ok, "outcomes": outcomes}
    return {"bench": "confined", "maps_per_level": n, "first_map": first, "levels": [1.0], "episodes_per_map": 1,
            "machine": "x", "methods": {"waypoints": {"task": "Go1-Waypoints-Confined", "levels": [level]}}}


def test_evaluations_of_consecutive_map_ranges_join_into_one() -> None:
    join = load_bench("confined_join").join
    a = _eval_json(0, [1, 0], ["success", "fall"], 10.0)
    b = _eval_json(2, [1, 1, 0, 0], ["success", "success", "stall", "fall"], 4.0)
    got = join([b, a])  # any order
    row = got["methods"]["waypoints"]["levels"][0]
    assert got["maps_per_level"] == 6 and row["maps"] == 6
    assert row["success"] == pytest.approx(0.5) and row["fall_rate"] == pytest.approx(2 / 6)
    assert row["time_to_goal_s"] == pytest.approx((10.0 * 1 + 4.0 * 2) / 3)  # weighted by successes
    assert row["per_map_success"] == [1, 0, 1, 1, 0, 0]
    assert row["outcomes"]["counts"] == {"success": 3, "fall": 2, "stall": 1, "slow": 0}
    assert row["outcomes"]["fall_at_low_ceiling"] == 2 and len(row["outcomes"]["per_episode"]) == 6
    with pytest.raises(ValueError, match="map ranges do not join: one starts at map 3, expected 2"):
        join([a, _eval_json(3, [1], ["success"], 1.0)])


def test_bad_difficulties_on_the_command_line_are_one_line_and_exit_2(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "bench" / "confined.py"
    p = subprocess.run([sys.executable, str(script), "train", "--method", "waypoints", "--difficulties", "hardest",
                        "--runs", str(tmp_path / "runs")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].endswith("pass e.g. hard or 0.5,1,1"), p.stderr
    assert not (tmp_path / "runs").exists()  # refused before any run folder is made
