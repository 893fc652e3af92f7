"""`gym:<id>`: any gymnasium env with Box spaces behind the batched env contract (s2r.sim.gym_adapter)."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from s2r.sim import get_task, make, task_config
from s2r.sim.config import from_dict, to_dict
from s2r.sim.gym_adapter import GymEnvError, GymTaskConfig, GymVecEnv, check_spaces
from s2r.sim.registry import UnknownTaskError


def test_task_config_and_spec_describe_the_gym_env() -> None:
    cfg = task_config("gym:Pendulum-v1")
    assert cfg == GymTaskConfig(env_id="Pendulum-v1", kwargs=())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.env_id = "CartPole-v1"  # type: ignore[misc]
    assert from_dict(GymTaskConfig, to_dict(cfg)) == cfg  # what a resume reads back from config.json
    assert get_task("gym:Pendulum-v1").env_cls is GymVecEnv
    env = make("gym:Pendulum-v1", 3, seed=0)
    try:
        spec = env.spec
        assert env.obs_dims == {"policy": 3}
        assert [t.name for t in spec.obs_terms["policy"]] == ["obs"]
        assert spec.action_names == ("a0",)
        assert spec.control_dt == pytest.approx(0.05)  # Pendulum's dt
        assert spec.max_episode_steps == 200  # its TimeLimit
        assert spec.extras["action_space"] == "box"
        assert spec.extras["action_low"] == [-2.0] and spec.extras["action_high"] == [2.0]
        obs = env.reset()
        assert obs["policy"].shape == (3, 3) and obs["policy"].dtype == np.float32
        assert len({tuple(row) for row in obs["policy"]}) == 3  # each copy has its own seed
    finally:
        env.close()


def test_actions_in_unit_box_map_onto_the_env_bounds() -> None:
    env = make("gym:Pendulum-v1", 3, seed=0)
    try:
        env.reset()
        # Beyond +-1 is clipped to the bound, as the exported policy's tanh output never leaves it.
        env.step(np.array([[-1.0], [0.5], [3.0]], dtype=np.float32))
        applied = [float(np.asarray(e.unwrapped.last_u).reshape(-1)[0]) for e in env.envs]
        assert applied == pytest.approx([-2.0, 1.0, 2.0])
    finally:
        env.close()


def test_auto_reset_matches_plain_gymnasium_copies() -> None:
    """final_obs, next obs, rewards and episode stats equal what N plain gymnasium envs give for the same actions."""
    n, seed = 3, 7
    env = make("gym:InvertedPendulum-v5", n, seed=seed)  # terminates when the pole falls: copies end at different steps
    refs = [gym.make("InvertedPendulum-v5") for _ in range(n)]
    try:
        obs = env.reset()
        ref_obs = np.stack([r.reset(seed=seed + i)[0] for i, r in enumerate(refs)]).astype(np.float32)
        np.testing.assert_array_equal(obs["policy"], ref_obs)
        rng = np.random.default_rng(0)
        ret, length = np.zeros(n), np.zeros(n, int)
        finished = 0
        for _ in range(150):
            a = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
            obs, rew, term, trunc, info = env.step(a)
            want_next = np.zeros_like(obs["policy"])
            want_final = np.zeros_like(obs["policy"])
            for i, r in enumerate(refs):
                o, rr, te, tr, _ = r.step(np.asarray(3.0 * a[i], dtype=np.float32))  # Box(-3, 3)
                want_final[i] = o
                assert (bool(term[i]), bool(trunc[i])) == (te, tr) and rew[i] == pytest.approx(rr)
                ret[i] += rr
                length[i] += 1
                want_next[i] = r.reset()[0] if (te or tr) else o
            np.testing.assert_allclose(obs["policy"], want_next, atol=1e-6)
            done = term | trunc
            if done.any():
                np.testing.assert_allclose(info["final_obs"]["policy"], want_final, atol=1e-6)
                ids = np.flatnonzero(done)
                np.testing.assert_array_equal(info["episode"]["env_ids"], ids)
                np.testing.assert_allclose(info["episode"]["return"], ret[ids], rtol=1e-5)
                np.testing.assert_array_equal(info["episode"]["length"], length[ids])
                ret[ids], length[ids] = 0.0, 0
                finished += len(ids)
                if not done.all():
                    # Unfinished copies' final_obs rows equal their next observation.
                    keep = ~done
                    np.testing.assert_array_equal(info["final_obs"]["policy"][keep], obs["policy"][keep])
            else:
                assert "final_obs" not in info and "episode" not in info
        assert finished >= n  # every copy finished at least once
    finally:
        env.close()
        for r in refs:
            r.close()


def test_discrete_actions_are_refused_in_one_sentence() -> None:
    with pytest.raises(GymEnvError) as err:
        make("gym:CartPole-v1")
    msg = str(err.value)
    assert "gym:CartPole-v1" in msg and "Discrete action space" in msg and "Box actions only" in msg
    assert "\n" not in msg


def test_unknown_gym_id_says_what_gymnasium_says() -> None:
    with pytest.raises(UnknownTaskError) as err:
        task_config("gym:Pendulm-v1")
    msg = str(err.value)
    assert "gym:Pendulm-v1" in msg and "Did you mean: 'Pendulum'" in msg and "gym:Pendulum-v1" in msg
    assert "`" not in msg and "\n" not in msg
    with pytest.raises(UnknownTaskError, match="names no gymnasium environment"):
        make("gym:")


@pytest.mark.parametrize(("obs_space", "act_space", "words"), [
    (gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-np.inf, np.inf, (2,)), "unbounded Box action space"),
    (gym.spaces.Box(0, 255, (84, 84, 3), np.uint8), gym.spaces.Box(-1, 1, (2,)), "observes images"),
    (gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (3,))}), gym.spaces.Box(-1, 1, (2,)), "Dict observation space"),
    (gym.spaces.Box(-1, 1, (3,)), gym.spaces.MultiDiscrete([3, 3]), "MultiDiscrete action space"),
    (gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-1, 1, (2, 2)), "1-D Box actions only"),
])
def test_unsupported_spaces_are_named(obs_space: gym.Space, act_space: gym.Space, words: str) -> None:
    with pytest.raises(GymEnvError, match=words) as err:
        check_spaces("Some-v0", obs_space, act_space)
    assert str(err.value).startswith("gym:Some-v0 ") and "\n" not in str(err.value)


def test_missing_optional_dependency_is_one_sentence() -> None:
    pytest.importorskip("gymnasium")
    try:
        import Box2D  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("Box2D is installed here, so the env builds")
    with pytest.raises(GymEnvError, match="gymnasium could not build 'gym:LunarLanderContinuous-v3': Box2D"):
        make("gym:LunarLanderContinuous-v3")


def test_make_kwargs_reach_gymnasium_and_survive_config_json() -> None:
    import json

    cfg = GymTaskConfig(env_id="Pendulum-v1", kwargs=(("g", 5.0),))
    back = from_dict(GymTaskConfig, json.loads(json.dumps(to_dict(cfg))))  # as a resume reads it back
    for c in (cfg, back):
        env = make("gym:Pendulum-v1", 2, cfg=c)
        try:
            assert [e.unwrapped.g for e in env.envs] == [5.0, 5.0]
        finally:
            env.close()
