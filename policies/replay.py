"""Replay buffer for off-policy learners: n-step sampling, FIFO capacity, crash-safe disk persistence, demos.

Layout. `num_envs` envs step in lockstep, so one `add` call is one *step*: a row of `num_envs` transitions.
Steps live in a ring of `capacity // num_envs` steps; the transition that follows env `i`'s transition in the
same episode is the one `num_envs` rows later. That is all n-step sampling needs: it walks forward row by
row until it has used `n_step` rewards, reaches an episode end, or reaches the newest data.

Observation groups. A group is a float32 vector (`obs_dims={"policy": 20}`, as always), or any shape with a
dtype from `obs_dtypes`: `float32` or `uint8` (images, (H, W, C) from a named camera). `sample()` returns
every group batched in its own dtype: (batch, dim) float32 vectors, (batch, H, W, C) uint8 images.

Memory. Everything is held uncompressed in preallocated numpy arrays, images as uint8, so the ring never
grows: `capacity` transitions, or fewer if `max_bytes` says so (`nbytes` is what was allocated). A
transition holds its observation and its next observation separately (they are not shared: after an
episode end the next observation is the final one, not the next row's), so an 84x84x3 image group costs
2 x 21,168 = 42,336 bytes per transition (about 4.2 GB per 100k transitions) plus the vectors.

Disk format (`directory=`): `meta.json` with every group's shape and dtype, then chunk files of records,
one per `add`, each with a magic number and a CRC-32; uint8 groups are zlib-compressed inside their record
(`s2r.policies.replay_records` documents the layout). A new chunk starts every `chunk_bytes`; whole chunks
that the ring has already overwritten are deleted, so the disk holds about `capacity` transitions plus one
chunk. Rendered scenes compress about 10x (84x84 Panda frames, see the tests).

Durability. Each record goes to the OS in a single unbuffered write as soon as `add` is called, so a killed
process (SIGKILL, OOM, crash) loses nothing that `add` returned from. It is not fsync'ed: a power cut can
lose the last seconds. `sync()` fsyncs; call it where a checkpoint is written. A record torn by a kill in
the middle of a write is detected (short length or wrong CRC), dropped with a warning, and cut off the file
so that appending continues on a record boundary. Re-opening bumps the session number:
episodes that were running when the previous process stopped are treated as truncated there, so n-step
returns never chain across a restart.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from s2r.policies.replay_records import (
    FORMAT,
    MAGIC,
    VERSION,
    decode_blobs,
    encode_record,
    fsync_dir,
    group_specs,
    meta_groups,
    record_dtype,
    scan_chunk,
    transition_bytes,
)

if TYPE_CHECKING:
    from s2r.real.episodes import Episode


@dataclass(frozen=True)
class Batch:
    """A sampled batch of n-step transitions (torch tensors, leading dim `batch`).

    `discount` is gamma^k (1 - terminated) for the k rewards summed into `reward`, so the learner's target
    is `reward + discount * Q(next_obs, .)` whatever k was.
    """

    obs: dict[str, torch.Tensor]  # group -> (batch, dim) float32, or (batch, H, W, C) uint8 for images
    action: torch.Tensor  # (batch, action_dim)
    reward: torch.Tensor  # (batch,)
    next_obs: dict[str, torch.Tensor]  # group -> as `obs`: the observation to bootstrap from
    discount: torch.Tensor  # (batch,)

    def __len__(self) -> int:
        return self.action.shape[0]


class ReplayBuffer:
    """FIFO ring of 1-step transitions from `num_envs` lockstep envs, optionally mirrored to a directory.

    Args:
        obs_dims: observation group name -> dim (a float32 vector) or shape (e.g. `env.obs_shapes`); every
            `add` must give these groups (others are ignored).
        action_dim: action size.
        capacity: transitions kept (rounded down to a multiple of `num_envs`); the oldest step is overwritten.
        num_envs: envs per `add` call.
        directory: if set, every step is appended to chunk files there; an existing buffer directory is
            re-opened (its transitions restored, appending continues). Its groups must match this buffer's.
        chunk_bytes: approximate size of one chunk file.
        obs_dtypes: group -> "float32" (default) or "uint8" (images, stored compressed on disk).
        max_bytes: optional RAM budget; `capacity` shrinks to what fits (`transition_bytes` each).
        compress_level: zlib level for uint8 groups on disk (0: stored as they are, 9: smallest).
    """

    def __init__(self, obs_dims: Mapping[str, int | Iterable[int]], action_dim: int, capacity: int,
                 num_envs: int = 1, directory: str | Path | None = None, chunk_bytes: int = 32 << 20, *,
                 obs_dtypes: Mapping[str, str] | None = None, max_bytes: int | None = None,
                 compress_level: int = 6) -> None:
        self.specs = group_specs(obs_dims, obs_dtypes)
        self.action_dim = int(action_dim)
        self.transition_bytes = transition_bytes(self.specs, self.action_dim)
        if max_bytes is not None:
            if max_bytes < self.transition_bytes * num_envs:
                raise ValueError(f"ReplayBuffer max_bytes={max_bytes} holds no step of {num_envs} transitions "
                                 f"({self.transition_bytes} bytes each); raise max_bytes or lower num_envs")
            capacity = min(capacity, max_bytes // self.transition_bytes)
        if num_envs < 1 or capacity < num_envs:
            raise ValueError(f"ReplayBuffer needs num_envs >= 1 and capacity >= num_envs, got {capacity=} {num_envs=}")
        self.obs_shapes = {g: s for g, (s, _) in self.specs.items()}
        self.obs_dtypes = {g: dt for g, (_, dt) in self.specs.items()}
        # Float vector groups only, as `VecEnv.obs_dims`.
        self.obs_dims = {g: s[0] for g, (s, dt) in self.specs.items() if dt == "float32" and len(s) == 1}
        self._images = [g for g, (_, dt) in self.specs.items() if dt == "uint8"]
        self._blob_keys = [f"{side}/{g}" for g in self._images for side in ("obs", "next_obs")]
        self.compress_level = compress_level
        self.num_envs = num_envs
        self.steps = capacity // num_envs  # ring length in steps
        self.capacity = self.steps * num_envs
        n = self.capacity
        self._obs = {g: np.zeros((n, *s), dt) for g, (s, dt) in self.specs.items()}
        self._next_obs = {g: np.zeros((n, *s), dt) for g, (s, dt) in self.specs.items()}
        self._action = np.zeros((n, self.action_dim), np.float32)
        self._reward = np.zeros(n, np.float32)
        self._terminated = np.zeros(n, bool)
        self._done = np.zeros(n, bool)  # terminated or truncated: where n-step sums stop
        self._ptr = 0  # next step slot to write
        self._size = 0  # steps stored
        self.directory = Path(directory) if directory is not None else None
        self._dtype = record_dtype(self.obs_shapes, self.action_dim, num_envs, self.obs_dtypes)
        self._file = None
        if self.directory is not None:
            self._open_directory(chunk_bytes)

    def __len__(self) -> int:
        """Transitions stored."""
        return self._size * self.num_envs

    @property
    def nbytes(self) -> int:
        """RAM held by the ring's arrays (allocated once, at construction)."""
        arrays = [*self._obs.values(), *self._next_obs.values(), self._action, self._reward, self._terminated,
                  self._done]
        return sum(a.nbytes for a in arrays)

    # ---- writing -------------------------------------------------------------------------------------------

    def add(self, obs: Mapping[str, np.ndarray | torch.Tensor], action: np.ndarray | torch.Tensor,
            reward: np.ndarray | torch.Tensor, next_obs: Mapping[str, np.ndarray | torch.Tensor],
            terminated: np.ndarray | torch.Tensor, truncated: np.ndarray | torch.Tensor) -> None:
        """Store one lockstep env step (every argument has leading dim `num_envs`).

        `next_obs` of an env whose episode just ended must be its final observation, not the reset one:
        a truncated episode bootstraps from it.
        """
        rec = np.zeros(1, self._dtype)
        images: dict[str, np.ndarray] = {}
        for g, (shape, dtype) in self.specs.items():
            if g not in obs or g not in next_obs:
                raise KeyError(f"ReplayBuffer.add: observation group '{g}' missing (buffer has {sorted(self.specs)})")
            for side, src in (("obs", obs), ("next_obs", next_obs)):
                x = _np(src[g])
                if dtype == "uint8":
                    if x.dtype != np.uint8 or x.shape != (self.num_envs, *shape):
                        raise ValueError(f"ReplayBuffer.add: {side} group '{g}' must be {(self.num_envs, *shape)} "
                                         f"uint8, got {x.shape} {x.dtype}")
                    images[f"{side}/{g}"] = x[None]
                else:
                    rec[f"{side}/{g}"][0] = x
        rec["action"][0] = _np(action)
        rec["reward"][0] = _np(reward)
        rec["terminated"][0] = _np(terminated)
        rec["truncated"][0] = _np(truncated)
        self._persist(rec, images)
        self._store(rec, images=images)

    def _persist(self, recs: np.ndarray, images: Mapping[str, np.ndarray]) -> None:
        """Append records to the directory (if any), one write() each."""
        if self._file is None:
            return
        recs["magic"], recs["session"] = MAGIC, self._session
        for k in range(len(recs)):
            self._append(encode_record(recs[k:k + 1], [images[key][k] for key in self._blob_keys],
                                       self.compress_level))

    def _store(self, recs: np.ndarray, session_break: np.ndarray | None = None,
               images: Mapping[str, np.ndarray] | None = None) -> None:
        """Copy records (one step each; uint8 groups in `images`, key -> (k, num_envs, *shape)) into the ring."""
        k = len(recs)
        if k == 0:
            return
        if k > self.steps:  # only the newest `steps` survive anyway
            recs = recs[-self.steps:]
            session_break = None if session_break is None else session_break[-self.steps:]
            images = {key: v[-self.steps:] for key, v in (images or {}).items()}
            k = self.steps
        slots = (self._ptr + np.arange(k)) % self.steps
        rows = (slots[:, None] * self.num_envs + np.arange(self.num_envs)).reshape(-1)
        e = self.num_envs
        for g, (shape, dtype) in self.specs.items():
            src = images if dtype == "uint8" else recs
            assert src is not None
            self._obs[g][rows] = src[f"obs/{g}"].reshape(k * e, *shape)
            self._next_obs[g][rows] = src[f"next_obs/{g}"].reshape(k * e, *shape)
        self._action[rows] = recs["action"].reshape(k * e, self.action_dim)
        self._reward[rows] = recs["reward"].reshape(-1)
        term = recs["terminated"].astype(bool)
        done = term | recs["truncated"].astype(bool)
        if session_break is not None:
            done |= session_break[:, None]
        self._terminated[rows] = term.reshape(-1)
        self._done[rows] = done.reshape(-1)
        self._ptr = int((self._ptr + k) % self.steps)
        self._size = min(self._size + k, self.steps)

    # ---- sampling ------------------------------------------------------------------------------------------

    def sample(self, batch_size: int, n_step: int = 1, gamma: float = 0.99,
               generator: torch.Generator | None = None) -> Batch:
        """Uniformly sample `batch_size` transitions with n-step returns.

        The reward sum stops early at an episode end (terminated or truncated) and at the newest stored step;
        `discount` is gamma^k for the k rewards used, times 0 if the last one terminated the episode.
        Every group comes back in its own dtype: float32 (batch, dim) vectors, uint8 (batch, H, W, C) images.
        """
        if self._size == 0:
            raise RuntimeError("cannot sample from an empty ReplayBuffer")
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        e = self.num_envs
        # Position counted from the oldest stored transition: successors exist while it stays below len(self).
        age = torch.randint(len(self), (batch_size,), generator=generator).numpy()
        oldest = (self._ptr - self._size) % self.steps
        idx = (oldest * e + age) % self.capacity
        ret = self._reward[idx].astype(np.float64)
        disc = np.full(batch_size, gamma, np.float64)
        last = idx
        active = np.ones(batch_size, bool)
        for j in range(1, n_step):
            active &= ~self._done[last] & (age + j * e < len(self))
            if not active.any():
                break
            nxt = (idx + j * e) % self.capacity
            ret += np.where(active, disc * self._reward[nxt], 0.0)
            disc = np.where(active, disc * gamma, disc)
            last = np.where(active, nxt, last)
        disc *= ~self._terminated[last]
        t = torch.from_numpy
        return Batch(obs={g: t(a[idx]) for g, a in self._obs.items()}, action=t(self._action[idx]),
                     reward=t(ret.astype(np.float32)), next_obs={g: t(a[last]) for g, a in self._next_obs.items()},
                     discount=t(disc.astype(np.float32)))

    # ---- demos ---------------------------------------------------------------------------------------------

    @classmethod
    def from_episodes(cls, episodes: Iterable[Episode], capacity: int | None = None,
                      groups: Iterable[str] | None = None) -> ReplayBuffer:
        """A buffer (in memory, `num_envs=1`) holding every transition of recorded episodes (`s2r.real.episodes`).

        The last step of an episode is stored as terminated if the episode ended in a terminal state and as
        truncated otherwise, so n-step returns never run from one episode into the next. uint8 groups
        (images) are kept as uint8.

        Args:
            episodes: e.g. the list from `s2r.real.episodes.read_episodes`.
            capacity: default: exactly the number of transitions.
            groups: observation groups to keep (default: all), e.g. those of the online buffer it is mixed with.
        """
        episodes = list(episodes)
        if not episodes:
            raise ValueError("ReplayBuffer.from_episodes needs at least one episode")
        first = episodes[0].obs
        keep = list(groups) if groups is not None else list(first)
        missing = [g for g in keep if g not in first]
        if missing:
            raise ValueError(f"episodes have no observation group(s) {missing} (they have {sorted(first)})")
        shapes = {g: first[g].shape[1:] for g in keep}
        dtypes = {g: "uint8" if first[g].dtype == np.uint8 else "float32" for g in keep}
        action_dim = int(episodes[0].actions.shape[1])
        total = sum(len(ep.actions) for ep in episodes)
        buf = cls(shapes, action_dim, capacity or max(total, 1), num_envs=1, obs_dtypes=dtypes)
        for ep in episodes:
            buf.add_episode(ep)
        return buf

    def add_episode(self, episode: Episode) -> None:
        """Append every transition of one recorded episode (needs `num_envs=1`; e.g. a new intervention).

        Written to the directory too when the buffer has one. Groups the buffer does not hold are ignored.
        """
        if self.num_envs != 1:
            raise ValueError(f"add_episode needs a buffer with num_envs=1, this one has {self.num_envs}")
        t = len(episode.actions)
        if t == 0:
            return
        bad = [g for g, (s, dt) in self.specs.items() if g not in episode.obs or episode.obs[g].shape[1:] != s
               or (dt == "uint8") != (episode.obs[g].dtype == np.uint8)]
        if bad or episode.actions.shape[1:] != (self.action_dim,):
            raise ValueError(f"episode from '{episode.source}' does not fit the buffer: observation groups {bad} "
                             f"missing or of another shape or dtype, or action width {episode.actions.shape[1:]} != "
                             f"({self.action_dim},)")
        recs = np.zeros(t, self._dtype)
        images: dict[str, np.ndarray] = {}
        for g, (_, dtype) in self.specs.items():
            if dtype == "uint8":
                images[f"obs/{g}"], images[f"next_obs/{g}"] = episode.obs[g][:-1, None], episode.obs[g][1:, None]
            else:
                recs[f"obs/{g}"][:, 0] = episode.obs[g][:-1]
                recs[f"next_obs/{g}"][:, 0] = episode.obs[g][1:]
        recs["action"][:, 0] = episode.actions
        recs["reward"][:, 0] = episode.rewards
        recs["terminated"][-1, 0] = bool(episode.terminated)
        recs["truncated"][-1, 0] = not episode.terminated
        self._persist(recs, images)
        self._store(recs, images=images)

    # ---- disk ----------------------------------------------------------------------------------------------

    def sync(self) -> None:
        """fsync the open chunk file (and the directory): survive a power cut, not only a process kill."""
        if self._file is not None:
            os.fsync(self._file.fileno())
            fsync_dir(self.directory)

    def close(self) -> None:
        """Close the chunk file (transitions already added are on disk either way)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> ReplayBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _meta(self) -> dict:
        groups = {g: {"shape": list(s), "dtype": dt} for g, (s, dt) in self.specs.items()}
        return {"format": FORMAT, "version": VERSION, "groups": groups, "action_dim": self.action_dim,
                "num_envs": self.num_envs, "record_bytes": self._dtype.itemsize}

    def _open_directory(self, chunk_bytes: int) -> None:
        d = self.directory
        assert d is not None
        d.mkdir(parents=True, exist_ok=True)
        meta_path = d / "meta.json"
        self._chunk_bytes = chunk_bytes
        self._chunks: list[list] = []  # [path, records, bytes] oldest first
        if meta_path.exists():
            self._check_meta(json.loads(meta_path.read_text()))
            self._session = self._restore()
        else:
            tmp = d / "meta.json.tmp"
            tmp.write_text(json.dumps(self._meta(), indent=2) + "\n")
            os.replace(tmp, meta_path)
            fsync_dir(d)
            self._session = 0
        if not self._chunks:
            self._new_chunk()
        # buffering=0: each record reaches the OS in one write() call, nothing waits in a Python buffer.
        self._file = open(self._chunks[-1][0], "ab", buffering=0)  # noqa: SIM115 (lives as long as the buffer)

    def _check_meta(self, meta: dict) -> None:
        if meta.get("format") != FORMAT or meta.get("version") not in (1, VERSION):
            raise ValueError(f"{self.directory} is not an s2r replay buffer of format version 1 or {VERSION} "
                             f"(meta.json says {meta.get('format')} v{meta.get('version')})")
        have = meta_groups(meta)
        diffs = []
        for g in dict.fromkeys([*have, *self.specs]):
            there = "absent" if g not in have else f"{have[g][0]} {have[g][1]}"
            here = "absent" if g not in self.specs else f"{self.specs[g][0]} {self.specs[g][1]}"
            if there != here:
                diffs.append(f"group '{g}' is {there} there, {here} in this buffer")
        want = self._meta()
        diffs += [f"{k}: directory has {meta.get(k)}, buffer wants {want[k]}"
                  for k in ("action_dim", "num_envs") if meta.get(k) != want[k]]
        if diffs:
            raise ValueError(f"replay directory {self.directory} was written for other data: " + "; ".join(diffs)
                             + ". Use a new directory or the original groups and dims.")

    def _restore(self) -> int:
        """Load every chunk into the ring, oldest first; return the session number for new records."""
        assert self.directory is not None
        paths = sorted(self.directory.glob("chunk_*.bin"))
        parts, blobs, positions, offset = [], [], [], 0
        for i, path in enumerate(paths):
            raw = path.read_bytes()
            scan = scan_chunk(raw, self._dtype)
            if scan.torn or scan.corrupt:
                warnings.warn(f"replay chunk {path}: dropped {scan.corrupt} corrupt record(s) and {scan.torn} byte(s) "
                              "of a torn record (the writing process was probably killed mid-write)", stacklevel=3)
            size = len(raw)
            if i == len(paths) - 1 and scan.end < len(raw):
                # Cut the damaged tail so that new records start on a record boundary.
                os.truncate(path, scan.end)
                size = scan.end
            parts.append(scan.records)
            blobs += scan.blobs
            positions.append(offset + scan.index)
            offset += scan.slots
            self._chunks.append([path, len(scan.records), size])
        if not parts or sum(len(p) for p in parts) == 0:
            return 0
        recs = np.concatenate(parts)
        pos = np.concatenate(positions)
        # An episode cannot continue across a dropped record or a restart (a new session): the step before
        # either is stored as truncated, so n-step sums stop there and bootstrap from its next observation.
        brk = np.ones(len(recs), bool)
        brk[:-1] = (np.diff(pos) > 1) | (recs["session"][1:] != recs["session"][:-1])
        session = int(recs["session"].max()) + 1
        if not self._blob_keys:
            self._store(recs, brk)
            return session
        # Decode images only for the steps the ring keeps, a few at a time (no second copy of the ring).
        start = max(0, len(recs) - self.steps)
        for a in range(start, len(recs), 64):
            b = min(a + 64, len(recs))
            frames = decode_blobs(blobs[a:b], [(self.num_envs, *self.specs[k.split("/", 1)[1]][0]) for k in self._blob_keys])
            self._store(recs[a:b], brk[a:b], dict(zip(self._blob_keys, frames, strict=True)))
        return session

    def _new_chunk(self) -> None:
        assert self.directory is not None
        idx = int(self._chunks[-1][0].stem.split("_")[1]) + 1 if self._chunks else 0
        path = self.directory / f"chunk_{idx:08d}.bin"
        path.touch()
        self._chunks.append([path, 0, 0])

    def _append(self, raw: bytes) -> None:
        last = self._chunks[-1]
        if last[1] > 0 and last[2] + len(raw) > self._chunk_bytes:
            self._file.close()
            self._new_chunk()
            self._file = open(self._chunks[-1][0], "ab", buffering=0)  # noqa: SIM115
        self._file.write(raw)
        self._chunks[-1][1] += 1
        self._chunks[-1][2] += len(raw)
        # Delete the oldest chunk once the ring has overwritten all of it.
        while len(self._chunks) > 1 and sum(c[1] for c in self._chunks[1:]) >= self.steps:
            self._chunks.pop(0)[0].unlink(missing_ok=True)


def sample_mixed(online: ReplayBuffer, demo: ReplayBuffer | None, batch_size: int, n_step: int = 1,
                 gamma: float = 0.99, generator: torch.Generator | None = None, demo_fraction: float = 0.5) -> Batch:
    """Symmetric sampling (RLPD): half the batch (`demo_fraction` of it) from `demo`, the rest from `online`.

    All of it comes from `online` when `demo` is None or empty (and all from `demo` while `online` is empty).
    """
    has_demo = demo is not None and len(demo) > 0 and demo_fraction > 0.0
    if not has_demo or len(online) == 0:
        src = online if len(online) > 0 or not has_demo else demo
        return src.sample(batch_size, n_step, gamma, generator)
    assert demo is not None
    n_on = batch_size - int(batch_size * demo_fraction)
    if n_on == 0:
        return demo.sample(batch_size, n_step, gamma, generator)
    a = online.sample(n_on, n_step, gamma, generator)
    b = demo.sample(batch_size - n_on, n_step, gamma, generator)
    cat = torch.cat
    return Batch(obs={g: cat([a.obs[g], b.obs[g]]) for g in a.obs}, action=cat([a.action, b.action]),
                 reward=cat([a.reward, b.reward]), next_obs={g: cat([a.next_obs[g], b.next_obs[g]]) for g in a.next_obs},
                 discount=cat([a.discount, b.discount]))


def _np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
