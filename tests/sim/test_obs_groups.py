"""Observation group specs: shapes and dtypes per group, per-group history, image groups, bad input."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from s2r.sim import make, task_config
from s2r.sim.env import EnvSpec, GroupSpec, ImageSpec, ObsHistory, ObsTerm, sample_obs
from s2r.sim.gym_env import SingleEnv
from s2r.sim.models import load_panda

TERMS = (ObsTerm(name="a", size=2), ObsTerm(name="b", size=3))


def _spec() -> EnvSpec:
    return EnvSpec(
        groups={"policy": GroupSpec(terms=TERMS, history=4), "privileged": GroupSpec(terms=TERMS[:1]),
                "image": GroupSpec(image=ImageSpec(camera="workspace", height=48, width=64))},
        action_names=("x",), control_dt=0.02, max_episode_steps=10,
    )


def test_group_spec_shapes_dtypes_and_compat_properties() -> None:
    spec = _spec()
    assert spec.group_shape("policy") == (20,) and spec.group_dim("policy") == 20
    assert spec.group_shape("privileged") == (2,) and spec.group_dtype("privileged") == "float32"
    assert spec.group_shape("image") == (48, 64, 3) and spec.group_dtype("image") == "uint8"
    assert spec.groups["policy"].frame_dim == 5 and spec.groups["image"].is_image
    assert spec.obs_terms == {"policy": TERMS, "privileged": TERMS[:1]}  # vector groups only
    assert spec.history_length == 4


def test_image_group_has_no_flat_width() -> None:
    with pytest.raises(ValueError, match="'image' is an image of shape \\(48, 64, 3\\), not a vector"):
        _spec().group_dim("image")


def test_unknown_group_names_the_declared_ones() -> None:
    with pytest.raises(KeyError, match=r"'imag' is not declared.*'image', 'policy', 'privileged'"):
        _spec().group_shape("imag")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"terms": TERMS, "history": 0}, "history must be >= 1"),
    ({"terms": TERMS, "image": ImageSpec(camera="c", height=2, width=2)}, "image GroupSpec takes no terms"),
])
def test_bad_group_spec_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GroupSpec(**kwargs)


def test_obs_history_stacks_per_group_and_restarts_rows() -> None:
    groups = {"policy": GroupSpec(terms=TERMS, history=3), "privileged": GroupSpec(terms=TERMS[:1], history=2),
              "one": GroupSpec(terms=TERMS[:1])}
    hist = ObsHistory(groups, num_envs=2)
    f = lambda v, d: np.full((2, d), float(v))  # noqa: E731
    out = hist.push({"policy": f(1, 5), "privileged": f(1, 2), "one": f(1, 2)})
    assert out["policy"].shape == (2, 15) and (out["policy"] == 1).all() and out["one"].shape == (2, 2)
    out = hist.push({"policy": f(2, 5), "privileged": f(2, 2), "one": f(2, 2)})
    np.testing.assert_array_equal(out["policy"][0], [1] * 10 + [2] * 5)  # oldest first
    np.testing.assert_array_equal(out["privileged"][0], [1, 1, 2, 2])
    rows = hist.reset_rows({"policy": np.full((1, 5), 9.0), "privileged": np.full((1, 2), 9.0)}, np.array([1]))
    assert (rows["policy"] == 9).all() and rows["privileged"].shape == (1, 4)
    out = hist.push({"policy": f(3, 5), "privileged": f(3, 2), "one": f(3, 2)})
    np.testing.assert_array_equal(out["policy"][1], [9] * 10 + [3] * 5)
    np.testing.assert_array_equal(out["policy"][0], [1] * 5 + [2] * 5 + [3] * 5)
    hist.clear()
    assert (hist.push({"policy": f(5, 5), "privileged": f(5, 2), "one": f(5, 2)})["policy"] == 5).all()


@pytest.mark.parametrize("task", ["Puck-Velocity-Flat", "Go1-Velocity-FlatNoDR", "Panda-Lift-Cube"])
def test_privileged_history_is_per_group(task: str) -> None:
    """privileged 2 frames, policy 1: only the privileged window slides; reset envs restart with copies."""
    cfg = task_config(task, {"privileged_history_length": 2})
    env = make(task, 4, cfg=cfg, seed=5)
    try:
        spec = env.spec
        frame = spec.groups["privileged"].frame_dim
        assert spec.history_length == 1 and env.obs_dims["privileged"] == 2 * frame
        prev = env.reset(seed=5)["privileged"].reshape(4, 2, frame)
        np.testing.assert_array_equal(prev[:, 0], prev[:, 1])
        env.randomize_episode_start()
        rng = np.random.default_rng(5)
        resets = 0
        for _ in range(40):
            obs, _, term, trunc, _ = env.step(rng.uniform(-1, 1, (4, spec.action_dim)))
            assert obs["policy"].shape == (4, spec.group_dim("policy"))
            cur = obs["privileged"].reshape(4, 2, frame)
            done = term | trunc
            np.testing.assert_array_equal(cur[~done, 0], prev[~done, 1])
            np.testing.assert_array_equal(cur[done, 0], cur[done, 1])
            resets += int(done.sum())
            prev = cur
        assert resets > 0
    finally:
        env.close()


def test_vector_only_envs_report_shapes_and_dtypes() -> None:
    env = make("Puck-Velocity-Flat", 3, seed=0)
    try:
        assert env.obs_dims == {"policy": 9, "privileged": 5}
        assert env.obs_shapes == {"policy": (9,), "privileged": (5,)}
        assert env.obs_dtypes == {"policy": "float32", "privileged": "float32"}
        got = sample_obs(env, steps=2)
        assert got["policy"].shape == (9, 9) and got["policy"].dtype == np.float32
    finally:
        env.close()


def test_unknown_image_camera_is_refused() -> None:
    cfg = task_config("Panda-Lift-Cube", {"image": "true", "image_camera": "wrist"})
    with pytest.raises(ValueError, match="image_camera 'wrist' is not a camera of the Panda model"):
        make("Panda-Lift-Cube", 1, cfg=cfg)


def test_gym_env_refuses_an_unknown_group() -> None:
    with pytest.raises(ValueError, match="obs_group 'critic' is not an observation group of Puck-Velocity-Flat"):
        SingleEnv("Puck-Velocity-Flat", obs_group="critic")


def _can_render() -> bool:
    try:
        mujoco.Renderer(load_panda(("cube",)), 16, 16).close()
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _can_render(), reason="offscreen rendering unavailable")
def test_panda_image_group_is_declared_and_uint8() -> None:
    cfg = task_config("Panda-Lift-Cube", {"image": "true", "image_size": "32,40"})
    env = make("Panda-Lift-Cube", 2, cfg=cfg, seed=1)
    try:
        spec = env.spec.groups["image"]
        assert spec.image == ImageSpec(camera="workspace", height=32, width=40)
        assert "image" not in env.obs_dims and env.obs_shapes["image"] == (32, 40, 3)
        assert env.obs_dtypes["image"] == "uint8"
        got = sample_obs(env, steps=1)
        assert got["image"].shape == (4, 32, 40, 3) and got["image"].dtype == np.uint8
        assert got["policy"].dtype == np.float32
    finally:
        env.close()
    gym_env = SingleEnv("Panda-Lift-Cube", overrides={"image": True, "image_size": (32, 40)}, obs_group="image")
    try:
        assert gym_env.observation_space.dtype == np.uint8 and gym_env.observation_space.shape == (32, 40, 3)
        obs, _ = gym_env.reset(seed=0)
        assert gym_env.observation_space.contains(obs)
    finally:
        gym_env.close()
