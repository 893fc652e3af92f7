"""The episode format: round trip, the vectorised recorder, and every way a directory can be wrong."""

from __future__ import annotations

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
