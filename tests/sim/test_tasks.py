"""Every registered task: contract smoke test, gymnasium/SB3 env checkers, determinism, resets, blow-ups."""

from __future__ import annotations

from dataclasses import replace

import gymnasium
import numpy as np
import pytest
import s2r.sim
from s2r.sim import gym_id, make, task_config, task_ids

TASKS = task_ids()
N = 4
# Tasks whose actions are the model's actuators (joint targets); the others map actions through a layer
# (end-effector deltas and IK, or a trajectory planner with no MuJoCo model in the step).
ACTUATOR_TASKS = [t for t in TASKS if t.split("-")[0] in ("Go1", "Puck")]


def _random_actions(rng: np.random.Generator, env: s2r.sim.VecEnv, std: float = 1.0) -> np.ndarray:
    return rng.normal(0.0, std, (env.num_envs, env.spec.action_dim)).astype(np.float32)


def _check_obs(env: s2r.sim.VecEnv, obs: dict[str, np.ndarray]) -> None:
    assert set(obs) == set(env.spec.obs_terms) >= {"policy", "privileged"}
    for group, value in obs.items():
        assert value.shape == (env.num_envs, env.obs_dims[group]), group
        assert value.dtype == np.float32, group
        assert np.isfinite(value).all(), group


@pytest.mark.parametrize("task", TASKS)
def test_task_smoke(task: str) -> None:
    env = make(task, N, seed=0)
    try:
        spec = env.spec
        assert len(task.split("-")) >= 3, "task ids read Robot-Task-Variant"
        assert spec.action_dim == len(spec.action_names)
        if task in ACTUATOR_TASKS:
            assert spec.action_dim == env.model.nu
        assert spec.control_dt > 0 and spec.max_episode_steps > 0
        for group, terms in spec.obs_terms.items():
            frame = sum(t.size for t in terms)
            assert env.obs_dims[group] == frame * (spec.history_length if group == "policy" else 1)
        obs = env.reset(seed=0)
        _check_obs(env, obs)
        rng = np.random.default_rng(0)
        for _ in range(5):
            obs, rew, term, trunc, info = env.step(_random_actions(rng, env))
            _check_obs(env, obs)
            assert rew.shape == (N,) and rew.dtype == np.float32 and np.isfinite(rew).all()
            assert term.shape == trunc.shape == (N,) and term.dtype == trunc.dtype == np.bool_
            assert info["log"]["nan_resets"] == 0
    finally:
        env.close()


@pytest.mark.parametrize("task", TASKS)
def test_task_runs_whole_episodes(task: str) -> None:
    """Random actions until every env has finished an episode: episode stats and final observations."""
    env = make(task, N, seed=1)
    try:
        env.reset(seed=1)
        if hasattr(env, "randomize_episode_start"):
            env.randomize_episode_start()  # most envs time out or fall soon
        rng = np.random.default_rng(1)
        finished: set[int] = set()
        for _ in range(env.spec.max_episode_steps + 1):
            obs, _, term, trunc, info = env.step(_random_actions(rng, env))
            done = term | trunc
            if done.any():
                ep = info["episode"]
                assert sorted(ep["env_ids"].tolist()) == np.flatnonzero(done).tolist()
                assert set(ep) >= {"return", "length"}
                assert np.isfinite(ep["return"]).all() and (ep["length"] >= 1).all()
                for group in obs:
                    assert info["final_obs"][group].shape == obs[group].shape
                finished |= set(ep["env_ids"].tolist())
            else:
                assert "final_obs" not in info
            if len(finished) == N:
                break
        assert len(finished) == N
    finally:
        env.close()


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_numbers_on_any_thread_count(task: str) -> None:
    """Outputs depend on the seed only: not on the run, nor on how many physics threads step the batch."""
    cfg = task_config(task)

    def roll(threads: int) -> list[np.ndarray]:
        c = replace(cfg, backend=replace(cfg.backend, num_threads=threads)) if hasattr(cfg, "backend") else cfg
        env = make(task, 6, cfg=c, seed=7)
        try:
            out = list(env.reset(seed=7).values())
            if hasattr(env, "randomize_episode_start"):
                env.randomize_episode_start()
            rng = np.random.default_rng(7)
            for _ in range(30):
                obs, rew, term, trunc, _ = env.step(_random_actions(rng, env))
                out += [*obs.values(), rew, term, trunc]
            return out
        finally:
            env.close()

    a, b, c = roll(2), roll(2), roll(1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("task", TASKS)
def test_reset_of_some_envs_leaves_the_others_alone(task: str) -> None:
    """On a step where some envs reset, the others' observations are exactly what they would have been."""
    env = make(task, 16, seed=2)
    if env.spec.max_episode_steps == 1:
        env.close()
        pytest.skip("one-step task: every env resets on every step")
    try:
        env.reset(seed=2)
        if hasattr(env, "randomize_episode_start"):
            env.randomize_episode_start()
        rng = np.random.default_rng(2)
        checked = 0
        for _ in range(200):
            obs, _, term, trunc, info = env.step(_random_actions(rng, env, std=1.5))
            done = term | trunc
            if done.any() and not done.all():
                for group in obs:
                    np.testing.assert_array_equal(obs[group][~done], info["final_obs"][group][~done])
                checked += 1
                if checked == 3:  # three partial-reset steps make the point; stepping on only costs time
                    break
        assert checked > 0
    finally:
        env.close()


def test_policy_history_moves_one_frame_per_step() -> None:
    """history_length 3: a running env's window slides by one frame; a reset env starts with 3 copies."""
    task = "Go1-Velocity-FlatNoDR"  # no observation noise, so frames compare exactly
    env = make(task, 8, cfg=task_config(task, {"history_length": 3}), seed=3)
    try:
        frame = env.obs_dims["policy"] // 3
        prev = env.reset(seed=3)["policy"].reshape(8, 3, frame)
        assert all(np.array_equal(prev[:, 0], prev[:, k]) for k in (1, 2))
        env.randomize_episode_start()
        rng = np.random.default_rng(3)
        resets = 0
        for _ in range(80):
            obs, _, term, trunc, _ = env.step(_random_actions(rng, env, std=1.5))
            cur = obs["policy"].reshape(8, 3, frame)
            done = term | trunc
            np.testing.assert_array_equal(cur[~done, :2], prev[~done, 1:])
            np.testing.assert_array_equal(cur[done, 0], cur[done, 2])
            resets += int(done.sum())
            prev = cur
        assert resets > 0
    finally:
        env.close()


@pytest.mark.parametrize("task", ["Go1-Velocity-Flat", "Puck-Velocity-Flat"])
def test_blown_up_world_is_reset_and_counted(task: str, tmp_path, monkeypatch) -> None:
    """NaN or absurd values in one world's state: that env resets and is counted; nothing non-finite leaks."""
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its warnings to MUJOCO_LOG.TXT in the working directory
    env = make(task, N, seed=4)
    try:
        env.reset(seed=4)
        rng = np.random.default_rng(4)
        for _ in range(3):
            env.step(_random_actions(rng, env, std=0.3))

        env.backend.qpos[1, 0] = np.nan
        obs, rew, term, _, info = env.step(_random_actions(rng, env, std=0.3))
        assert info["log"]["nan_resets"] == 1
        assert term[1] and 1 in info["episode"]["env_ids"].tolist()
        assert np.isfinite(rew).all() and np.isfinite(env.backend.state).all()
        assert all(np.isfinite(v).all() for v in (*obs.values(), *info["final_obs"].values()))

        env.backend.qvel[2] = 1e12  # beyond MuJoCo's bad-value bound
        obs, rew, term, _, info = env.step(_random_actions(rng, env, std=0.3))
        assert info["log"]["nan_resets"] == 2 and term[2]
        assert np.isfinite(rew).all() and all(np.isfinite(v).all() for v in obs.values())

        bad_actions = _random_actions(rng, env)
        bad_actions[0] = [np.nan] * env.spec.action_dim
        bad_actions[3, 0] = np.inf
        for _ in range(5):
            obs, rew, *_ = env.step(bad_actions)
            assert np.isfinite(rew).all() and all(np.isfinite(v).all() for v in obs.values())
    finally:
        env.close()


def test_blown_up_world_does_not_disturb_the_others(tmp_path, monkeypatch) -> None:
    """One physics thread steps every world on one scratch MjData: NaN in one must not leak into the next."""
    monkeypatch.chdir(tmp_path)
    task = "Go1-Velocity-FlatNoDR"
    cfg = task_config(task, {"backend.num_threads": "1"})
    clean, broken = make(task, N, cfg=cfg, seed=5), make(task, N, cfg=cfg, seed=5)
    try:
        clean.reset(seed=5)
        broken.reset(seed=5)
        rng = np.random.default_rng(5)
        others = [0, 2, 3]
        for t in range(4):
            act = _random_actions(rng, clean, std=0.3)
            if t == 1:
                broken.backend.qvel[1] = np.nan
            clean.step(act)
            broken.step(act)
            np.testing.assert_array_equal(clean.backend.state[others], broken.backend.state[others])
        assert broken.nan_resets == 1 and clean.nan_resets == 0
    finally:
        clean.close()
        broken.close()


@pytest.mark.filterwarnings("ignore:.*Box.*space")  # unbounded observations and a [-clip, clip] action box
@pytest.mark.parametrize("task", TASKS)
def test_gymnasium_env_checker(task: str) -> None:
    from gymnasium.utils.env_checker import check_env

    env = gymnasium.make(gym_id(task))
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


@pytest.mark.filterwarnings("ignore:.*symmetric and normalized Box action space")
@pytest.mark.parametrize("task", TASKS)
def test_sb3_env_checker(task: str) -> None:
    from stable_baselines3.common.env_checker import check_env

    env = gymnasium.make(gym_id(task))
    try:
        check_env(env, warn=True)
        obs, _ = env.reset(seed=0)
        assert obs.shape == env.observation_space.shape and obs.dtype == np.float32
    finally:
        env.close()


def test_gym_episode_end_reports_final_observation() -> None:
    """The one-world wrapper returns the observation the episode ended on, plus the episode stats."""
    env = gymnasium.make(gym_id("Puck-Velocity-Flat"))
    try:
        env.reset(seed=0)
        steps = 0
        while True:
            obs, _, term, trunc, info = env.step(env.action_space.sample())
            steps += 1
            if term or trunc:
                break
        assert trunc and steps == env.unwrapped.env.spec.max_episode_steps
        assert info["episode_stats"]["length"] == steps and np.isfinite(obs).all()
    finally:
        env.close()


def test_model_pool_shares_randomised_models_and_reports_them() -> None:
    """With randomization.model_pool=N, envs draw from N models and the privileged DR values match them."""
    import s2r.sim as S
    from s2r.sim.config import apply_overrides

    cfg = apply_overrides(S.task_config("Go1-Velocity-Flat"), {"randomization.model_pool": 4})
    env = S.make("Go1-Velocity-Flat", 16, cfg=cfg, seed=3)
    try:
        env.reset(seed=3)
        for _ in range(3):
            env.step(np.zeros((16, 12), np.float32))
        models = env.backend.models
        assert len({id(m) for m in models}) <= 4
        kp = np.array([m.actuator_gainprm[0, 0] for m in models])
        np.testing.assert_allclose(kp, env._kp[0] * env.dr_params[:, 2])
        mass = np.array([m.body_mass[env._trunk] for m in models])
        np.testing.assert_allclose(mass, env.model.body_mass[env._trunk] + env.dr_params[:, 1])
    finally:
        env.close()
