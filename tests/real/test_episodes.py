"""The episode format: round trip, the vectorised recorder, and every way a directory can be wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest
from s2r.real.episodes import Episode, EpisodeFormatError, EpisodeMeta, EpisodeRecorder, EpisodeWriter, read_episodes

META = EpisodeMeta(task="Panda-Lift-Cube", obs_dims={"policy": 3, "privileged": 2}, action_dim=2, action_names=("a", "b"),
                   control_dt=0.05)


def _episode(t: int, seed: int = 0, success: bool = True) -> Episode:
    rng = np.random.default_rng(seed)
    obs = {"policy": rng.normal(size=(t + 1, 3)).astype(np.float32), "privileged": rng.normal(size=(t + 1, 2)).astype(np.float32)}
    return Episode(obs=obs,
                   actions=rng.uniform(-1, 1, (t, 2)).astype(np.float32), rewards=np.r_[np.zeros(t - 1), 1.0].astype(np.float32),
                   terminated=success, success=success, source="expert")


def test_round_trip_and_append(tmp_path):
    w = EpisodeWriter(tmp_path / "d", META)
    eps = [_episode(5, 0), _episode(7, 1, success=False)]
    for e in eps:
        w.add(e)
    # Re-opening appends after the last episode.
    EpisodeWriter(tmp_path / "d", META).add(_episode(3, 2))
    meta, got = read_episodes(tmp_path / "d", task="Panda-Lift-Cube", obs_dims={"policy": 3}, action_dim=2)
    assert meta == META
    assert [e.length for e in got] == [5, 7, 3]
    np.testing.assert_array_equal(got[1].obs["policy"], eps[1].obs["policy"])
    np.testing.assert_array_equal(got[0].actions, eps[0].actions)
    assert got[0].success and not got[1].success and not got[1].terminated
    assert got[0].source == "expert" and got[0].intervention.shape == (5,) and not got[0].intervention.any()


def test_recorder_splits_lockstep_envs_into_episodes(tmp_path):
    rec = EpisodeRecorder(EpisodeWriter(tmp_path, META), num_envs=2, source="policy")
    obs = {"policy": np.zeros((2, 3)), "privileged": np.zeros((2, 2))}
    finished = []
    for t in range(4):
        nxt = {"policy": np.full((2, 3), t + 1.0), "privileged": np.zeros((2, 2))}
        term = np.array([t == 1, False])
        trunc = np.array([False, t == 3])
        final = {"policy": np.full((2, 3), 100.0 + t), "privileged": np.zeros((2, 2))}
        finished += rec.step(obs, np.full((2, 2), 0.5), np.array([float(t == 1), 0.0]), nxt, term, trunc,
                             success=term, final_obs=final, intervention=np.array([True, False]))
        obs = nxt
    assert [e.length for e in finished] == [2, 4]
    first, second = finished
    assert first.terminated and first.success and first.intervention.all()
    assert first.obs["policy"][-1, 0] == 101.0  # the observation before auto-reset, not the reset one
    assert not second.terminated and not second.success and second.obs["policy"].shape == (5, 3)
    assert len(read_episodes(tmp_path)[1]) == 2


def test_wrong_task_dims_and_action_width_name_the_difference(tmp_path):
    EpisodeWriter(tmp_path, META).add(_episode(4))
    with pytest.raises(EpisodeFormatError, match="recorded on task 'Panda-Lift-Cube', not 'Panda-Insert-Peg'"):
        read_episodes(tmp_path, task="Panda-Insert-Peg")
    with pytest.raises(EpisodeFormatError, match="'policy' has width 3, expected 4"):
        read_episodes(tmp_path, obs_dims={"policy": 4})
    with pytest.raises(EpisodeFormatError, match="no observation group 'image'"):
        read_episodes(tmp_path, obs_dims={"image": 4})
    with pytest.raises(EpisodeFormatError, match="action width 2, expected 7"):
        read_episodes(tmp_path, action_dim=7)
    other = EpisodeMeta(task="Panda-Insert-Peg", obs_dims={"policy": 3, "privileged": 2}, action_dim=2)
    with pytest.raises(EpisodeFormatError, match="refusing to append"):
        EpisodeWriter(tmp_path, other)


def test_missing_truncated_and_malformed(tmp_path):
    with pytest.raises(EpisodeFormatError, match="does not exist"):
        read_episodes(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EpisodeFormatError, match=r"meta\.json is missing"):
        read_episodes(tmp_path / "empty")
    w = EpisodeWriter(tmp_path / "d", META)
    with pytest.raises(EpisodeFormatError, match="holds no episodes"):
        read_episodes(tmp_path / "d")
    path = w.add(_episode(6))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EpisodeFormatError, match=r"episode_000000\.npz is truncated"):
        read_episodes(tmp_path / "d")
    with pytest.raises(EpisodeFormatError, match="obs group 'policy' has shape"):
        bad = _episode(3)
        w.add(Episode(obs={"policy": bad.obs["policy"][:2], "privileged": bad.obs["privileged"]}, actions=bad.actions,
                      rewards=bad.rewards, terminated=True, success=True))
    (tmp_path / "d" / "meta.json").write_text("{not json")
    with pytest.raises(EpisodeFormatError, match="not valid JSON"):
        read_episodes(tmp_path / "d")


IMG_META = EpisodeMeta(task="Panda-Lift-Cube", obs_dims={"policy": 3}, action_dim=2, image_shapes={"image": (24, 32, 3)})


def _scene(t: int, h: int = 24, w: int = 32) -> np.ndarray:
    """A rendered-like frame: flat wall and floor, a cube that moves with t."""
    img = np.empty((h, w, 3), np.uint8)
    img[: h // 3], img[h // 3:] = (40, 40, 48), (150, 140, 120)
    img[h // 2:h // 2 + 4, t % (w - 4):t % (w - 4) + 4] = (200, 20, 20)
    return img


def _image_episode(t: int, seed: int = 0) -> Episode:
    base = _episode(t, seed)
    return Episode(obs={"policy": base.obs["policy"], "image": np.stack([_scene(i + seed) for i in range(t + 1)])},
                   actions=base.actions, rewards=base.rewards, terminated=True, success=True, source="teleop")


def test_image_groups_round_trip_compressed(tmp_path):
    w = EpisodeWriter(tmp_path / "img", IMG_META)
    eps = [_image_episode(40, 0), _image_episode(5, 3)]
    paths = [w.add(e) for e in eps]
    assert json.loads((tmp_path / "img" / "meta.json").read_text())["version"] == 2
    meta, got = read_episodes(tmp_path / "img", obs_dims={"policy": 3}, obs_shapes={"image": (24, 32, 3), "policy": (3,)},
                              obs_dtypes={"image": "uint8"})
    assert meta == IMG_META and meta.obs_dtypes == {"policy": "float32", "image": "uint8"}
    for e, g in zip(eps, got, strict=True):
        assert g.obs["image"].dtype == np.uint8
        np.testing.assert_array_equal(g.obs["image"], e.obs["image"])
        np.testing.assert_array_equal(g.obs["policy"], e.obs["policy"])
    raw = eps[0].obs["image"].nbytes + eps[0].obs["policy"].nbytes + eps[0].actions.nbytes
    assert paths[0].stat().st_size * 10 < raw  # flat regions: over 10x smaller than the arrays
    # Vector-only directories are written exactly as before: version 1, uncompressed.
    EpisodeWriter(tmp_path / "vec", META).add(_episode(3))
    assert json.loads((tmp_path / "vec" / "meta.json").read_text())["version"] == 1


def test_recorder_keeps_image_frames_per_env(tmp_path):
    rec = EpisodeRecorder(EpisodeWriter(tmp_path, IMG_META), num_envs=2, source="policy")
    frames = lambda t: np.stack([_scene(t), _scene(t + 10)])  # noqa: E731
    obs = {"policy": np.zeros((2, 3), np.float32), "image": frames(0)}
    finished = []
    for t in range(3):
        nxt = {"policy": np.full((2, 3), t + 1.0, np.float32), "image": frames(t + 1)}
        done = np.array([t == 2, t == 2])
        finished += rec.step(obs, np.zeros((2, 2)), np.zeros(2), nxt, done, np.zeros(2, bool), success=done)
        obs = nxt
    assert [e.obs["image"].shape for e in finished] == [(4, 24, 32, 3)] * 2
    _, got = read_episodes(tmp_path, obs_shapes={"image": (24, 32, 3)})
    np.testing.assert_array_equal(got[1].obs["image"][3], _scene(13))


def test_image_group_of_wrong_shape_or_dtype_names_the_file_and_group(tmp_path):
    w = EpisodeWriter(tmp_path, IMG_META)
    path = w.add(_image_episode(4))
    is_small = r"observation group 'image' is \(24, 32, 3\) uint8, expected"
    with pytest.raises(EpisodeFormatError, match=is_small + r" \(84, 84, 3\) uint8"):
        read_episodes(tmp_path, obs_shapes={"image": (84, 84, 3)})
    with pytest.raises(EpisodeFormatError, match=is_small + r" \(24, 32, 3\) float32"):
        read_episodes(tmp_path, obs_shapes={"image": (24, 32, 3)}, obs_dtypes={"image": "float32"})
    with pytest.raises(EpisodeFormatError, match=r"episode 1: image group 'image' is \(5, 24, 32, 3\) float32, expected"):
        bad = _image_episode(4)
        w.add(Episode(obs={**bad.obs, "image": bad.obs["image"].astype(np.float32)}, actions=bad.actions,
                      rewards=bad.rewards, terminated=True, success=True))
    # Files written by something else: a float image, then a frame of another size.
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    for image, what in ((data["obs.image"].astype(np.float32), r"\(5, 24, 32, 3\) float32"),
                        (data["obs.image"][:, :20], r"\(5, 20, 32, 3\) uint8")):
        np.savez_compressed(path, **{**data, "obs.image": image})
        with pytest.raises(EpisodeFormatError, match=rf"episode_000000\.npz: image group 'image' is {what}, expected "
                                                     r"\(5, 24, 32, 3\) uint8"):
            read_episodes(tmp_path)
    other = EpisodeMeta(task="Panda-Lift-Cube", obs_dims={"policy": 3}, action_dim=2, image_shapes={"image": (84, 84, 3)})
    with pytest.raises(EpisodeFormatError, match="refusing to append"):
        EpisodeWriter(tmp_path, other)
    meta = json.loads((tmp_path / "meta.json").read_text())
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "image_shapes": {"image": [24, 32]}}))
    with pytest.raises(EpisodeFormatError, match=r"image group 'image' has shape \[24, 32\]; image_shapes must be"):
        read_episodes(tmp_path)
