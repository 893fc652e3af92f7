"""Replay buffer with uint8 image groups: round trip, CRC and torn records, a real SIGKILL, memory bound, compression."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from s2r.policies.replay import ReplayBuffer, record_dtype, transition_bytes
from s2r.real.episodes import Episode

H, W = 12, 16
SHAPES = {"policy": 2, "image": (H, W, 3)}
DTYPES = {"image": "uint8"}


def _scene(t: int, e: int, h: int = H, w: int = W) -> np.ndarray:
    """A rendered-like frame: flat floor and wall, a cube that moves with t; pixel (0, 0) stamps (t, env)."""
    img = np.empty((h, w, 3), np.uint8)
    img[: h // 3] = (40, 40, 48)  # wall
    img[h // 3:] = (150, 140, 120)  # floor
    c = (3 * t) % (w - 3)
    img[h // 2:h // 2 + 3, c:c + 3] = (200, 20, 20)  # cube
    img[0, 0] = (t % 256, e, 7)
    return img


def _images(t: int, envs: int) -> np.ndarray:
    return np.stack([_scene(t, e) for e in range(envs)])


def _fill(buf: ReplayBuffer, steps: int, start: int = 0, end_at: int | None = None) -> None:
    """Steps start..; env 0's episode terminates at `end_at` (its next observation is stamped 100 + t)."""
    e = buf.num_envs
    for t in range(start, start + steps):
        env = np.arange(e, dtype=np.float32)
        term = np.array([t == end_at] + [False] * (e - 1))
        nxt_t = np.where(term, 100 + t, t + 1)
        obs = {"policy": np.stack([np.full(e, t, np.float32), env], 1), "image": _images(t, e)}
        nxt = {"policy": np.stack([nxt_t.astype(np.float32), env], 1),
               "image": np.stack([_scene(int(nxt_t[i]), i) for i in range(e)])}
        buf.add(obs, np.zeros((e, 1), np.float32), np.ones(e, np.float32), nxt, term, np.zeros(e, bool))


def _check_batch(batch) -> set[int]:
    """Every sampled image is the frame of its vector observation; returns the sampled steps."""
    assert batch.obs["image"].dtype == torch.uint8 and batch.obs["image"].shape[1:] == (H, W, 3)
    assert batch.next_obs["image"].dtype == torch.uint8
    for i in range(len(batch)):
        t, e = (int(v) for v in batch.obs["policy"][i])
        assert np.array_equal(batch.obs["image"][i].numpy(), _scene(t, e))
        nt = int(batch.next_obs["policy"][i, 0])
        assert np.array_equal(batch.next_obs["image"][i].numpy(), _scene(nt, e))
    return {int(v) for v in batch.obs["policy"][:, 0]}


def _offsets(chunk: Path, spec: dict, num_envs: int) -> list[tuple[int, int]]:
    """(start, length) of every whole record of a chunk file, read from the documented layout."""
    dt = record_dtype(spec, 1, num_envs, DTYPES)
    raw, out, at = chunk.read_bytes(), [], 0
    while at + dt.itemsize <= len(raw):
        n = dt.itemsize + int(np.frombuffer(raw, dt, 1, at)["blob_bytes"][0])
        if at + n > len(raw):
            break
        out.append((at, n))
        at += n
    return out


def test_image_group_round_trip_in_memory_and_on_disk(tmp_path: Path) -> None:
    mem = ReplayBuffer(SHAPES, 1, capacity=40, num_envs=2, obs_dtypes=DTYPES)
    with ReplayBuffer(SHAPES, 1, capacity=40, num_envs=2, directory=tmp_path, obs_dtypes=DTYPES,
                      chunk_bytes=2000) as disk:
        for buf in (mem, disk):
            _fill(buf, 25, end_at=7)
    assert mem.obs_dims == {"policy": 2} and mem.obs_shapes["image"] == (H, W, 3)
    assert len(sorted(tmp_path.glob("chunk_*.bin"))) > 1  # several chunks, the oldest evicted
    assert json.loads((tmp_path / "meta.json").read_text())["groups"]["image"] == {"shape": [H, W, 3], "dtype": "uint8"}
    again = ReplayBuffer(SHAPES, 1, capacity=40, num_envs=2, directory=tmp_path, obs_dtypes=DTYPES)
    for buf in (mem, again):
        batch = buf.sample(300, n_step=3, gamma=0.5, generator=torch.Generator().manual_seed(0))
        assert _check_batch(batch) == set(range(5, 25))  # the newest 20 steps
    a = mem.sample(64, 3, 0.5, torch.Generator().manual_seed(1))
    b = again.sample(64, 3, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(a.obs["image"], b.obs["image"]) and torch.equal(a.next_obs["image"], b.next_obs["image"])
    assert torch.equal(a.reward, b.reward) and torch.equal(a.discount, b.discount)
    # The terminal step's next image is the final frame (stamped 107), not the next row's.
    one = again.sample(500, generator=torch.Generator().manual_seed(2))
    final = [i for i in range(500) if tuple(one.obs["policy"][i].tolist()) == (7.0, 0.0)]
    assert final and all(one.next_obs["image"][i, 0, 0, 0] == 107 and one.discount[i] == 0 for i in final)
    again.close()


def test_flipped_image_byte_and_torn_tail_are_dropped(tmp_path: Path) -> None:
    with ReplayBuffer(SHAPES, 1, capacity=100, num_envs=2, directory=tmp_path, obs_dtypes=DTYPES) as buf:
        _fill(buf, 5)
    chunk = next(tmp_path.glob("chunk_*.bin"))
    records = _offsets(chunk, SHAPES, 2)
    assert len(records) == 5
    start, n = records[2]
    raw = bytearray(chunk.read_bytes())
    raw[start + n - 5] ^= 0xFF  # a byte inside step 2's compressed images
    chunk.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="dropped 1 corrupt record"):
        buf = ReplayBuffer(SHAPES, 1, capacity=100, num_envs=2, directory=tmp_path, obs_dtypes=DTYPES)
    assert len(buf) == 8
    steps = _check_batch(buf.sample(300, n_step=3, gamma=0.5, generator=torch.Generator().manual_seed(0)))
    assert steps == {0, 1, 3, 4}
    # No n-step sum runs across the dropped step: step 1 bootstraps from its own next observation.
    b = buf.sample(500, n_step=3, gamma=0.5, generator=torch.Generator().manual_seed(0))
    assert all(float(b.discount[i]) == 0.5 for i in range(500) if int(b.obs["policy"][i, 0]) == 1)
    buf.close()
    with open(chunk, "ab") as f:  # what a kill in the middle of a write leaves
        f.write(chunk.read_bytes()[records[4][0]:records[4][0] + records[4][1] // 2])
    with pytest.warns(UserWarning, match="torn"):
        buf = ReplayBuffer(SHAPES, 1, capacity=100, num_envs=2, directory=tmp_path, obs_dtypes=DTYPES)
    assert len(buf) == 8 and chunk.stat().st_size == len(raw)  # cut back to a record boundary
    _fill(buf, 1, start=5)
    buf.close()
    # The appended record lines up after the cut: only the old flipped record is reported again.
    with pytest.warns(UserWarning, match=r"dropped 1 corrupt record\(s\) and 0 byte\(s\)"):
        buf = ReplayBuffer(SHAPES, 1, capacity=100, num_envs=2, directory=tmp_path, obs_dtypes=DTYPES)
    assert len(buf) == 10 and _check_batch(buf.sample(300, generator=torch.Generator().manual_seed(0))) == {0, 1, 3, 4, 5}
    buf.close()


@pytest.mark.parametrize("where", ["magic", "blob_bytes low", "blob_bytes high", "last blob byte"])
def test_damage_anywhere_in_a_middle_record_drops_that_record_only(tmp_path: Path, where: str) -> None:
    with ReplayBuffer(SHAPES, 1, capacity=100, num_envs=2, directory=tmp_path, obs_dtypes=DTYPES) as buf:
        _fill(buf, 6)
    chunk = next(tmp_path.glob("chunk_*.bin"))
    start, n = _offsets(chunk, SHAPES, 2)[3]
    at = {"magic": 1, "blob_bytes low": 12, "blob_bytes high": 15, "last blob byte": n - 1}[where]
    raw = bytearray(chunk.read_bytes())
    raw[start + at] ^= 0x5A
    chunk.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match=r"dropped 1 corrupt record\(s\) and 0 byte\(s\)"):
        buf = ReplayBuffer(SHAPES, 1, capacity=100, num_envs=2, directory=tmp_path, obs_dtypes=DTYPES)
    assert _check_batch(buf.sample(300, generator=torch.Generator().manual_seed(0))) == {0, 1, 2, 4, 5}
    buf.close()


_N, _S = 64, 128  # 64 envs of 128x128x3 frames, stored (level 0): 6 MB a record, so kills can land in write()
_SPEC = {"policy": 2, "image": (_S, _S, 3)}
_WRITER = textwrap.dedent(f"""
    import sys
    import numpy as np
    from s2r.policies.replay import ReplayBuffer
    buf = ReplayBuffer({_SPEC}, 1, capacity={_N * 64}, num_envs={_N}, directory=sys.argv[1],
                       obs_dtypes={{"image": "uint8"}}, compress_level=0)
    img = np.random.default_rng(0).integers(0, 256, ({_N}, {_S}, {_S}, 3), dtype=np.uint8)
    env = np.arange({_N}, dtype=np.float32)
    for t in range(100_000):
        img[:, 0, 0, 0] = t % 256
        obs = {{"policy": np.stack([np.full({_N}, t, np.float32), env], 1), "image": img}}
        buf.add(obs, np.full(({_N}, 1), t, np.float32), np.full({_N}, t, np.float32), obs,
                np.zeros({_N}, bool), np.zeros({_N}, bool))
        print(t, flush=True)
""")


def test_sigkill_mid_write_with_images_then_reopen(tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (_N, _S, _S, 3), dtype=np.uint8)  # the writer's frames
    # Stop at the first torn record (about 9 kills in 10 tear one here).
    for trial in range(6):
        folder = tmp_path / str(trial)
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(folder)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            last = -1
            for line in proc.stdout:
                last = int(line)
                if last >= 3:
                    break
            # Kill as soon as the chunk file starts growing: most often while write() is still copying.
            chunk, deadline = max(folder.glob("chunk_*.bin")), time.monotonic() + 5.0
            size = chunk.stat().st_size
            while chunk.stat().st_size == size and time.monotonic() < deadline:
                pass
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            buf = ReplayBuffer(_SPEC, 1, capacity=_N * 64, num_envs=_N, directory=folder, obs_dtypes=DTYPES)
        steps = len(buf) // _N
        assert steps >= last + 1  # everything add() returned from survived the kill
        chunks = sorted(folder.glob("chunk_*.bin"))
        records = [_offsets(c, _SPEC, _N) for c in chunks]
        assert sum(map(len, records)) == steps
        assert all(c.stat().st_size == sum(n for _, n in r) for c, r in zip(chunks, records, strict=True))  # tail cut
        batch = buf.sample(64, n_step=3, gamma=0.5, generator=torch.Generator().manual_seed(0))
        t, env = batch.obs["policy"][:, 0].numpy(), batch.obs["policy"][:, 1].numpy().astype(int)
        assert np.all(t < steps) and np.all(batch.action[:, 0].numpy() == t)
        img = batch.obs["image"].numpy()
        assert np.array_equal(img[:, 0, 0, 0], t.astype(np.uint8))
        assert np.array_equal(img[:, 1:], frames[env, 1:])  # every frame restored bit for bit
        buf.close()
        shutil.rmtree(folder)  # 6 MB a record: do not leave them in pytest's kept tmp folders
        if any("torn" in str(w.message) and " 0 byte(s)" not in str(w.message) for w in caught):
            break
    else:
        pytest.fail("none of 6 kills landed inside a write(): the torn-record path was not exercised")


def test_memory_stays_within_max_bytes_with_images() -> None:
    # 84x84x3 uint8: 2 x 21,168 bytes (observation and next observation) + 4-wide action, reward and flags.
    assert transition_bytes({"image": ((84, 84, 3), "uint8")}, 4) == 42_358
    per = transition_bytes({"policy": ((2,), "float32"), "image": ((H, W, 3), "uint8")}, 1)
    budget = 50 * per + per // 2  # room for 50 transitions, i.e. 25 steps of 2 envs
    tracemalloc.start()
    try:
        buf = ReplayBuffer(SHAPES, 1, capacity=10_000, num_envs=2, obs_dtypes=DTYPES, max_bytes=budget)
        _fill(buf, 80)
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert buf.capacity == 50 and len(buf) == 50 and buf.nbytes <= budget
    assert current < budget + 20_000  # numpy's allocations are traced: the ring plus small Python objects
    assert _check_batch(buf.sample(200, generator=torch.Generator().manual_seed(0))) == set(range(55, 80))
    with pytest.raises(ValueError, match="max_bytes=100 holds no step of 2 transitions"):
        ReplayBuffer(SHAPES, 1, capacity=10, num_envs=2, obs_dtypes=DTYPES, max_bytes=100)


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("chunk_*.bin"))


def test_rendered_like_images_compress_on_disk(tmp_path: Path) -> None:
    shape = {"policy": 2, "image": (84, 84, 3)}
    raw_frames = 30 * 4 * 2 * 84 * 84 * 3  # 30 steps, 4 envs, observation and next observation
    scenes, noise = tmp_path / "scenes", tmp_path / "noise"
    rng = np.random.default_rng(0)
    for folder in (scenes, noise):
        with ReplayBuffer(shape, 1, capacity=200, num_envs=4, directory=folder, obs_dtypes=DTYPES) as buf:
            for t in range(30):
                img = (np.stack([_scene(t, e, 84, 84) for e in range(4)]) if folder == scenes
                       else rng.integers(0, 256, (4, 84, 84, 3), dtype=np.uint8))
                o = {"policy": np.zeros((4, 2), np.float32), "image": img}
                buf.add(o, np.zeros((4, 1)), np.zeros(4), o, np.zeros(4, bool), np.zeros(4, bool))
    assert _disk_bytes(scenes) * 20 < raw_frames  # flat regions: over 20x smaller than the frames
    assert _disk_bytes(noise) > raw_frames  # noise does not compress: the ratio above is the codec's doing


def test_real_rendered_frames_compress_and_round_trip(tmp_path: Path, renderer_or_skip: None) -> None:
    import s2r.sim as S

    cfg = S.task_config("Panda-Lift-Cube", {"image": "true", "image_size": "84,84"})
    env = S.make("Panda-Lift-Cube", 2, cfg=cfg, seed=3)
    spec = {"policy": env.obs_dims["policy"], "image": (84, 84, 3)}
    try:
        obs = env.reset(seed=3)
        with ReplayBuffer(spec, 4, capacity=100, num_envs=2, directory=tmp_path, obs_dtypes=DTYPES) as buf:
            for _ in range(8):
                act = np.random.default_rng(0).uniform(-1, 1, (2, 4))
                nxt, rew, term, trunc, info = env.step(act)
                buf.add(obs, act, rew, info.get("final_obs", nxt), term, trunc)
                obs = nxt
    finally:
        env.close()
    frames = 8 * 2 * 2 * 84 * 84 * 3
    assert _disk_bytes(tmp_path) * 3 < frames  # a real MuJoCo scene: over 3x smaller on disk
    again = ReplayBuffer(spec, 4, capacity=100, num_envs=2, directory=tmp_path, obs_dtypes=DTYPES)
    a = buf.sample(32, generator=torch.Generator().manual_seed(0))
    b = again.sample(32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.obs["image"], b.obs["image"]) and a.obs["image"].float().std() > 5  # a scene, bit for bit
    again.close()


def test_spec_mismatch_names_the_group(tmp_path: Path) -> None:
    ReplayBuffer(SHAPES, 1, capacity=10, directory=tmp_path, obs_dtypes=DTYPES).close()
    with pytest.raises(ValueError, match=r"group 'image' is \(12, 16, 3\) uint8 there, \(84, 84, 3\) uint8 in this"):
        ReplayBuffer({"policy": 2, "image": (84, 84, 3)}, 1, capacity=10, directory=tmp_path, obs_dtypes=DTYPES)
    with pytest.raises(ValueError, match=r"group 'image' is \(12, 16, 3\) uint8 there, \(12, 16, 3\) float32 in this"):
        ReplayBuffer(SHAPES, 1, capacity=10, directory=tmp_path)
    ReplayBuffer({"policy": 2}, 1, capacity=10, directory=tmp_path.parent / "vec").close()
    with pytest.raises(ValueError, match="group 'image' is absent there"):
        ReplayBuffer(SHAPES, 1, capacity=10, directory=tmp_path.parent / "vec", obs_dtypes=DTYPES)
    with pytest.raises(ValueError, match="observation group 'image' is \\(84, 84, 3\\) float16"):
        ReplayBuffer({"image": (84, 84, 3)}, 1, capacity=10, obs_dtypes={"image": "float16"})
    buf = ReplayBuffer(SHAPES, 1, capacity=10, num_envs=2, obs_dtypes=DTYPES)
    o = {"policy": np.zeros((2, 2)), "image": np.zeros((2, H, W, 3), np.float32)}
    with pytest.raises(ValueError, match=r"obs group 'image' must be \(2, 12, 16, 3\) uint8, got \(2, 12, 16, 3\) float32"):
        buf.add(o, np.zeros((2, 1)), np.zeros(2), o, np.zeros(2, bool), np.zeros(2, bool))


def test_version_1_directories_are_still_read(tmp_path: Path) -> None:
    with ReplayBuffer({"policy": 2}, 1, capacity=10, directory=tmp_path) as buf:
        o = {"policy": np.ones((1, 2))}
        buf.add(o, np.zeros((1, 1)), np.zeros(1), o, np.zeros(1, bool), np.zeros(1, bool))
    v1 = {"format": "s2r-replay", "version": 1, "obs_dims": {"policy": 2}, "action_dim": 1, "num_envs": 1,
          "record_bytes": record_dtype({"policy": 2}, 1, 1).itemsize}
    (tmp_path / "meta.json").write_text(json.dumps(v1))  # what the previous release wrote, same records
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = ReplayBuffer({"policy": 2}, 1, capacity=10, directory=tmp_path)
    assert len(again) == 1
    again.close()


def test_episodes_with_images_feed_the_buffer(tmp_path: Path) -> None:
    def ep(t: int, terminated: bool) -> Episode:
        return Episode(obs={"policy": np.stack([np.arange(t + 1), np.zeros(t + 1)], 1).astype(np.float32),
                            "image": np.stack([_scene(i, 0) for i in range(t + 1)])},
                       actions=np.zeros((t, 1), np.float32), rewards=np.ones(t, np.float32), terminated=terminated,
                       success=terminated, source="expert")

    buf = ReplayBuffer.from_episodes([ep(4, True), ep(3, False)])
    assert buf.obs_dtypes == {"policy": "float32", "image": "uint8"} and len(buf) == 7
    _check_batch(buf.sample(100, n_step=2, generator=torch.Generator().manual_seed(0)))
    with ReplayBuffer(SHAPES, 1, capacity=10, directory=tmp_path, obs_dtypes=DTYPES) as disk:
        disk.add_episode(ep(4, True))
    again = ReplayBuffer(SHAPES, 1, capacity=10, directory=tmp_path, obs_dtypes=DTYPES)
    assert _check_batch(again.sample(100, generator=torch.Generator().manual_seed(0))) == {0, 1, 2, 3}
    again.close()
    bad = ep(2, True)
    bad.obs["image"] = bad.obs["image"].astype(np.float32)
    with pytest.raises(ValueError, match=r"observation groups \['image'\] missing or of another shape or dtype"):
        buf.add_episode(bad)
