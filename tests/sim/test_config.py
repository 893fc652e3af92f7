"""Typed config overrides: unknown keys name the close ones, wrong types say what is wanted, nesting works."""

from __future__ import annotations

import pytest
from s2r.policies.cli import main
from s2r.policies.ppo import TrainConfig
from s2r.sim import task_config
from s2r.sim.config import ConfigError, apply_overrides, from_dict, to_dict
from s2r.sim.tasks.locomotion import LocomotionConfig

TASK = "Go1-Velocity-Flat"


@pytest.mark.parametrize(("key", "suggestion", "section"), [
    ("rewards.feet_airtime", "feet_air_time", "RewardConfig"),
    ("contrl_dt", "control_dt", "LocomotionConfig"),
    ("randomization.frction", "friction", "RandomizationConfig"),
])
def test_unknown_key_names_it_and_suggests_the_close_one(key: str, suggestion: str, section: str) -> None:
    with pytest.raises(ConfigError) as err:
        task_config(TASK, {key: "1"})
    msg = str(err.value)
    assert f"'{key}'" in msg and f"Did you mean: {suggestion}" in msg and section in msg


def test_unknown_key_with_nothing_close_lists_the_known_keys() -> None:
    with pytest.raises(ConfigError, match=r"Known keys: .*track_lin_vel_xy"):
        task_config(TASK, {"rewards.zzzzzz": 1})


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"episode_s": "long"}, "'episode_s' wants float, got 'long'"),
    ({"history_length": "2.5"}, "'history_length' wants int"),
    ({"commands.lin_vel_x": "fast,slow"}, "'commands.lin_vel_x' wants tuple"),
    ({"commands.lin_vel_x": "0.5"}, "'commands.lin_vel_x' wants 2 values, got 1"),
    ({"rewards": 3}, "'rewards' is a section"),
    ({"episode_s.minutes": 1}, "below a value that is not a config section"),
])
def test_wrong_types_are_errors(overrides: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        task_config(TASK, overrides)
    assert expected in str(err.value)


def test_bool_fields_want_true_or_false() -> None:
    assert apply_overrides(TrainConfig(), {"algo.value_clip": "off"}).algo.value_clip is False
    with pytest.raises(ConfigError, match=r"'algo\.value_clip' wants true/false, got 'maybe'"):
        apply_overrides(TrainConfig(), {"algo.value_clip": "maybe"})


def test_nested_overrides_are_typed_and_leave_the_original_alone() -> None:
    base = task_config(TASK)
    cfg = apply_overrides(base, {
        "rewards.feet_air_time": "0.5",
        "commands.lin_vel_x": "(-0.5, 0.5)",
        "randomization.action_latency_steps": "1,1",
        "foot_sites": "FR_foot, FL_foot, RR_foot, RL_foot",
        "backend.num_threads": "1",
        "commands": {"resample_s": 4},
    })
    assert cfg.rewards.feet_air_time.weight == 0.5
    assert cfg.commands.lin_vel_x == (-0.5, 0.5) and cfg.commands.resample_s == 4.0
    assert cfg.randomization.action_latency_steps == (1, 1)
    assert cfg.foot_sites == ("FR_foot", "FL_foot", "RR_foot", "RL_foot")
    assert cfg.backend.num_threads == 1
    assert base == LocomotionConfig() and cfg.rewards.torques == base.rewards.torques
    train = apply_overrides(TrainConfig(), {"algo.policy.actor_hidden": "512,256", "algo.policy.init_std": "0.5"})
    assert train.algo.policy.actor_hidden == (512, 256) and train.algo.policy.init_std == 0.5


def test_config_round_trips_through_plain_dicts() -> None:
    cfg = task_config(TASK, {"rewards.feet_air_time": 0.3})
    assert from_dict(LocomotionConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="unknown config keys"):
        from_dict(LocomotionConfig, {**to_dict(cfg), "old_field": 1})


def test_cli_set_typo_exits_2_naming_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", TASK, "--set", "rewards.feet_airtime=1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "rewards.feet_airtime" in err and "feet_air_time" in err
    assert "Traceback" not in err


def test_cli_train_set_typo_and_unknown_task_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", TASK, "--train-set", "algo.entropy_coeff=0.01", "--no-progress"]) == 2
    assert "entropy_coef" in capsys.readouterr().err
    assert main(["train", "Go1-Velocity-Flatt", "--no-progress"]) == 2
    assert "Go1-Velocity-Flat" in capsys.readouterr().err


def test_optional_fields_take_a_value_from_none_and_back() -> None:
    from s2r.policies.residual import ResidualConfig

    cfg = apply_overrides(ResidualConfig(), {"learner.q_filter": "1.5", "warmup_noise": "none"})
    assert cfg.learner.q_filter == 1.5 and isinstance(cfg.learner.q_filter, float) and cfg.warmup_noise is None
    back = apply_overrides(cfg, {"learner.q_filter": "None", "warmup_noise": "0.1"})
    assert back.learner.q_filter is None and back.warmup_noise == 0.1
    with pytest.raises(ConfigError, match=r"config key 'learner\.q_filter' wants float or none, got 'high'"):
        apply_overrides(ResidualConfig(), {"learner.q_filter": "high"})
