"""Replay buffer: n-step sums by hand, FIFO, disk persistence (incl. a real SIGKILL), demos, symmetric sampling."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from s2r.policies.replay import ReplayBuffer, record_dtype, sample_mixed
from s2r.real.episodes import Episode

DIMS = {"policy": 2, "extra": 1}


def _step(t: int, num_envs: int, final: set[int] = frozenset()) -> dict:
    """Step t: obs encodes (t, env); next_obs of an env in `final` is marked as a final observation (+100)."""
    env = np.arange(num_envs, dtype=np.float32)
    obs = {"policy": np.stack([np.full(num_envs, t, np.float32), env], 1), "extra": env[:, None] * 0 + 7}
    nxt = np.full(num_envs, t + 1, np.float32)
    for e in final:
        nxt[e] = 100 + t
    return {"obs": obs, "next_obs": {"policy": np.stack([nxt, env], 1), "extra": env[:, None] * 0 + 7},
            "action": np.stack([np.full(num_envs, -t, np.float32), env], 1)}


def _reward(t: int, e: int) -> float:
    return 1.0 + t + 10.0 * e


def _fill(buf: ReplayBuffer, steps: int, terminated: dict[int, int], truncated: dict[int, int]) -> None:
    """`terminated`/`truncated`: env -> the step where its episode ends."""
    n = buf.num_envs
    for t in range(steps):
        term = np.array([terminated.get(e) == t for e in range(n)])
        trunc = np.array([truncated.get(e) == t for e in range(n)])
        d = _step(t, n, final={e for e in range(n) if term[e] or trunc[e]})
        buf.add(d["obs"], d["action"], np.array([_reward(t, e) for e in range(n)], np.float32), d["next_obs"], term, trunc)


def _by_key(batch) -> dict[tuple[int, int], tuple[float, float, tuple[float, float]]]:
    """(step, env) -> (n-step reward, discount, bootstrap obs) for every sampled transition."""
    out = {}
    for i in range(len(batch)):
        t, e = (int(v) for v in batch.obs["policy"][i])
        out[(t, e)] = (float(batch.reward[i]), float(batch.discount[i]), tuple(batch.next_obs["policy"][i].tolist()))
        assert batch.action[i].tolist() == [-t, e]
    return out


def test_n_step_reward_and_discount_by_hand() -> None:
    buf = ReplayBuffer(DIMS, 2, capacity=100, num_envs=2)
    # env 0 terminates at step 2 (then a new episode runs 3..4); env 1 is truncated at step 3.
    _fill(buf, 5, terminated={0: 2}, truncated={1: 3})
    g, r = 0.5, _reward
    got = _by_key(buf.sample(2000, n_step=3, gamma=g, generator=torch.Generator().manual_seed(0)))
    assert len(got) == 10
    expect = {
        (0, 0): (r(0, 0) + g * r(1, 0) + g**2 * r(2, 0), 0.0, (102, 0)),  # three rewards, last one terminal
        (1, 0): (r(1, 0) + g * r(2, 0), 0.0, (102, 0)),  # stops at the terminal step
        (2, 0): (r(2, 0), 0.0, (102, 0)),
        (3, 0): (r(3, 0) + g * r(4, 0), g**2, (5, 0)),  # newest data: bootstraps after two rewards
        (4, 0): (r(4, 0), g, (5, 0)),
        (1, 1): (r(1, 1) + g * r(2, 1) + g**2 * r(3, 1), g**3, (103, 1)),  # truncation: bootstrap from final obs
        (2, 1): (r(2, 1) + g * r(3, 1), g**2, (103, 1)),
        (3, 1): (r(3, 1), g, (103, 1)),
        (4, 1): (r(4, 1), g, (5, 1)),
    }
    for key, (ret, disc, nxt) in expect.items():
        assert got[key][0] == pytest.approx(ret, rel=1e-6), key
        assert got[key][1] == pytest.approx(disc, rel=1e-6), key
        assert got[key][2] == nxt, key
    one = _by_key(buf.sample(2000, n_step=1, gamma=g, generator=torch.Generator().manual_seed(0)))
    assert one[(0, 0)] == (pytest.approx(r(0, 0)), pytest.approx(g), (1, 0))
    assert one[(2, 0)][1] == 0.0 and one[(3, 1)][1] == pytest.approx(g)


def test_fifo_overwrite_keeps_the_newest_steps() -> None:
    buf = ReplayBuffer(DIMS, 2, capacity=7, num_envs=2)  # rounded down to 3 steps of 2 envs
    assert buf.capacity == 6
    _fill(buf, 5, terminated={}, truncated={})
    assert len(buf) == 6
    got = _by_key(buf.sample(500, n_step=4, gamma=0.5, generator=torch.Generator().manual_seed(1)))
    assert {t for t, _ in got} == {2, 3, 4}
    # The oldest stored step chains through the two newer ones, never into overwritten rows.
    assert got[(2, 1)] == (pytest.approx(_reward(2, 1) + 0.5 * _reward(3, 1) + 0.25 * _reward(4, 1)),
                           pytest.approx(0.125), (5, 1))


def _samples_equal(a: ReplayBuffer, b: ReplayBuffer, n_step: int) -> None:
    x = a.sample(256, n_step, 0.9, torch.Generator().manual_seed(3))
    y = b.sample(256, n_step, 0.9, torch.Generator().manual_seed(3))
    for k in ("action", "reward", "discount"):
        assert torch.equal(getattr(x, k), getattr(y, k)), k
    for g in DIMS:
        assert torch.equal(x.obs[g], y.obs[g]) and torch.equal(x.next_obs[g], y.next_obs[g])


def test_persistence_round_trip_chunks_and_eviction(tmp_path: Path) -> None:
    ref = ReplayBuffer(DIMS, 2, capacity=40, num_envs=2)
    rec = record_dtype(DIMS, 2, 2).itemsize
    with ReplayBuffer(DIMS, 2, capacity=40, num_envs=2, directory=tmp_path, chunk_bytes=5 * rec) as disk:
        for buf in (ref, disk):
            _fill(buf, 37, terminated={0: 11, 1: 30}, truncated={0: 25})
        _samples_equal(ref, disk, 3)
    # 20 steps kept in the ring; whole chunks the ring overwrote are gone from disk.
    chunks = sorted(tmp_path.glob("chunk_*.bin"))
    assert chunks[0].name != "chunk_00000000.bin"
    assert 20 <= sum(p.stat().st_size for p in chunks) // rec <= 25
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean close leaves nothing to warn about
        again = ReplayBuffer(DIMS, 2, capacity=40, num_envs=2, directory=tmp_path, chunk_bytes=5 * rec)
    assert len(again) == len(ref) == 40
    _samples_equal(ref, again, 3)
    # Appending continues; the restart ends the running episodes (truncated), so no n-step sum crosses it.
    _fill(again, 1, terminated={}, truncated={})
    got = _by_key(again.sample(2000, 3, 0.5, torch.Generator().manual_seed(0)))
    assert got[(36, 1)] == (pytest.approx(_reward(36, 1)), pytest.approx(0.5), (37, 1))
    again.close()
    third = ReplayBuffer(DIMS, 2, capacity=40, num_envs=2, directory=tmp_path, chunk_bytes=5 * rec)
    _samples_equal(again, third, 3)
    third.close()


def test_torn_and_corrupt_records_are_dropped_with_a_warning(tmp_path: Path) -> None:
    with ReplayBuffer(DIMS, 2, capacity=100, num_envs=2, directory=tmp_path) as buf:
        _fill(buf, 4, terminated={}, truncated={})
    chunk = next(tmp_path.glob("chunk_*.bin"))
    rec = record_dtype(DIMS, 2, 2).itemsize
    with open(chunk, "ab") as f:  # what a kill in the middle of a write leaves
        f.write(chunk.read_bytes()[: rec // 2])
    with pytest.warns(UserWarning, match="torn"):
        buf = ReplayBuffer(DIMS, 2, capacity=100, num_envs=2, directory=tmp_path)
    assert len(buf) == 8 and chunk.stat().st_size == 4 * rec  # cut back to a record boundary
    buf.close()
    raw = bytearray(chunk.read_bytes())
    raw[-3] ^= 0xFF  # a bit flip in the last record: its CRC no longer matches
    chunk.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="corrupt"):
        buf = ReplayBuffer(DIMS, 2, capacity=100, num_envs=2, directory=tmp_path)
    assert len(buf) == 6
    _fill(buf, 1, terminated={}, truncated={})
    buf.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ReplayBuffer(DIMS, 2, capacity=100, num_envs=2, directory=tmp_path) as buf:
            assert len(buf) == 8


_N, _D = 64, 16384  # 8 MB per record: the writer spends much of its time inside write(), so kills can tear one
_WRITER = textwrap.dedent(f"""
    import sys
    import numpy as np
    from s2r.policies.replay import ReplayBuffer
    buf = ReplayBuffer({{"policy": {_D}}}, 2, capacity={_N * 64}, num_envs={_N}, directory=sys.argv[1])
    obs = {{"policy": np.zeros(({_N}, {_D}), np.float32)}}
    for t in range(100_000):
        obs["policy"][:] = t
        buf.add(obs, np.full(({_N}, 2), t, np.float32), np.full({_N}, t, np.float32), obs,
                np.zeros({_N}, bool), np.zeros({_N}, bool))
        print(t, flush=True)
""")


def test_sigkill_mid_write_then_reopen(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rec = record_dtype({"policy": _D}, 2, _N).itemsize
    # A kill lands inside a write about one time in three here; stop at the first torn record (or after 5 kills).
    for trial in range(5):
        folder = tmp_path / str(trial)
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(folder)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            last = -1
            for line in proc.stdout:
                last = int(line)
                if last >= 3:
                    break
            time.sleep(rng.uniform(0.0, 0.03))
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            buf = ReplayBuffer({"policy": _D}, 2, capacity=_N * 64, num_envs=_N, directory=folder)
        steps = len(buf) // _N
        assert steps >= last + 1  # everything add() returned from survived the kill
        assert sum(p.stat().st_size for p in folder.glob("chunk_*.bin")) == steps * rec  # a torn tail is cut off
        batch = buf.sample(256, n_step=3, gamma=0.5, generator=torch.Generator().manual_seed(0))
        t = batch.obs["policy"][:, 0]
        assert torch.all(batch.obs["policy"] == t[:, None]) and torch.all(batch.action == t[:, None])
        assert torch.all(t < steps)
        buf.close()
        shutil.rmtree(folder)  # 8 MB a record: do not leave them in pytest's kept tmp folders
        if any("torn" in str(w.message) for w in caught):
            break


def test_dims_mismatch_names_the_directory_and_the_difference(tmp_path: Path) -> None:
    ReplayBuffer(DIMS, 2, capacity=10, directory=tmp_path).close()
    with pytest.raises(ValueError, match=rf"{tmp_path}.*group 'policy' is \(2,\) float32 there, \(3,\) float32 in"):
        ReplayBuffer({"policy": 3, "extra": 1}, 2, capacity=10, directory=tmp_path)
    with pytest.raises(ValueError, match="action_dim: directory has 2, buffer wants 5"):
        ReplayBuffer(DIMS, 5, capacity=10, directory=tmp_path)


def _constant_buffer(value: float, n: int) -> ReplayBuffer:
    buf = ReplayBuffer({"policy": 1}, 1, capacity=n)
    for _ in range(n):
        o = {"policy": np.full((1, 1), value, np.float32)}
        buf.add(o, np.zeros((1, 1)), np.zeros(1), o, np.zeros(1, bool), np.zeros(1, bool))
    return buf


def test_sample_mixed_takes_half_from_each() -> None:
    online, demo = _constant_buffer(0.0, 50), _constant_buffer(1.0, 20)
    gen = torch.Generator().manual_seed(0)
    assert sample_mixed(online, demo, 256, generator=gen).obs["policy"].sum() == 128
    assert sample_mixed(online, demo, 255, generator=gen).obs["policy"].sum() == 127
    assert sample_mixed(online, None, 64, generator=gen).obs["policy"].sum() == 0
    empty = ReplayBuffer({"policy": 1}, 1, capacity=4)
    assert len(sample_mixed(online, empty, 64, generator=gen)) == 64
    assert sample_mixed(empty, demo, 64, generator=gen).obs["policy"].sum() == 64


def test_from_episodes_keeps_episode_ends(tmp_path: Path) -> None:
    def ep(t: int, base: float, terminated: bool) -> Episode:
        obs = np.arange(t + 1, dtype=np.float32)[:, None] + base
        return Episode(obs={"policy": obs, "privileged": obs * 0}, actions=np.zeros((t, 1), np.float32),
                       rewards=np.ones(t, np.float32), terminated=terminated, success=terminated, source="expert",
                       intervention=np.zeros(t, bool))

    episodes = [ep(3, 0.0, True), ep(2, 100.0, False)]
    buf = ReplayBuffer.from_episodes(episodes, groups=["policy"])
    assert len(buf) == 5 and list(buf.obs_dims) == ["policy"]
    b = buf.sample(500, n_step=5, gamma=0.5, generator=torch.Generator().manual_seed(0))
    by_obs = {float(o): (float(r), float(d), float(n)) for o, r, d, n in
              zip(b.obs["policy"][:, 0], b.reward, b.discount, b.next_obs["policy"][:, 0], strict=True)}
    assert by_obs[0.0] == (1.75, 0.0, 3.0)  # ends in a terminal state: no bootstrap
    assert by_obs[2.0] == (1.0, 0.0, 3.0)
    assert by_obs[100.0] == (1.5, 0.25, 102.0)  # time limit: bootstrap from the last observation
    # Appended one by one to a directory (interventions arriving online), then re-opened: the same data.
    with ReplayBuffer({"policy": 1}, 1, capacity=5, directory=tmp_path) as disk:
        for e in episodes:
            disk.add_episode(e)
    again = ReplayBuffer({"policy": 1}, 1, capacity=5, directory=tmp_path)
    c = again.sample(500, n_step=5, gamma=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(b.reward, c.reward) and torch.equal(b.discount, c.discount)
    again.close()
