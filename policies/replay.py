"""Replay buffer for off-policy learners: n-step sampling, FIFO capacity, crash-safe disk persistence, demos.

Layout. `num_envs` envs step in lockstep, so one `add` call is one *step*: a row of `num_envs` transitions.
Steps live in a ring of `capacity // num_envs` steps; the transition that follows env `i`'s transition in the
same episode is the one `num_envs` rows later. That is all n-step sampling needs: it walks forward row by
row until it has used `n_step` rewards, reaches an episode end, or reaches the newest data.

Disk format (`directory=`), version 1. `meta.json` names the observation groups and their dims, the action
dim and `num_envs`. Steps are appended to `chunk_00000000.bin`, `chunk_00000001.bin`, ... Each file is a
plain sequence of fixed-size records, one per `add`, in the numpy structured dtype of `record_dtype()`
(little-endian): a magic number, a CRC-32 of the rest of the record, a session number, then every field of
the step (observations, action, reward, terminated, truncated, next observations). A new chunk starts every
`chunk_bytes`; whole chunks that the ring has already overwritten are deleted, so the disk holds about
`capacity` transitions plus one chunk.

Durability. Each record goes to the OS in a single unbuffered write as soon as `add` is called, so a killed
process (SIGKILL, OOM, crash) loses nothing that `add` returned from. It is not fsync'ed: a power cut can
lose the last seconds. `sync()` fsyncs; call it where a checkpoint is written. A record torn by a kill in
the middle of a write is detected (short length or wrong CRC), dropped with a warning, and cut off the file
so that appending continues on a record boundary. Re-opening bumps the session number: episodes that were
running when the previous process stopped are treated as truncated there, so n-step returns never chain
across a restart.
"""

from __future__ import annotations

import json
import os
import warnings
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from s2r.real.episodes import Episode

FORMAT = "s2r-replay"
VERSION = 1
MAGIC = 0x53325250  # "S2RP"


@dataclass(frozen=True)
class Batch:
    """A sampled batch of n-step transitions (torch tensors, leading dim `batch`).

    `discount` is gamma^k (1 - terminated) for the k rewards summed into `reward`, so the learner's target
    is `reward + discount * Q(next_obs, .)` whatever k was.
    """

    obs: dict[str, torch.Tensor]  # group -> (batch, dim)
    action: torch.Tensor  # (batch, action_dim)
    reward: torch.Tensor  # (batch,)
    next_obs: dict[str, torch.Tensor]  # group -> (batch, dim): the observation to bootstrap from
    discount: torch.Tensor  # (batch,)

    def __len__(self) -> int:
        return self.action.shape[0]


def record_dtype(obs_dims: Mapping[str, int], action_dim: int, num_envs: int) -> np.dtype:
    """The numpy structured dtype of one on-disk record (one `add` call). Documents the format."""
    fields: list[tuple] = [("magic", "<u4"), ("crc", "<u4"), ("session", "<u4")]
    fields += [(f"obs/{g}", "<f4", (num_envs, d)) for g, d in obs_dims.items()]
    fields += [("action", "<f4", (num_envs, action_dim)), ("reward", "<f4", (num_envs,)),
               ("terminated", "u1", (num_envs,)), ("truncated", "u1", (num_envs,))]
    fields += [(f"next_obs/{g}", "<f4", (num_envs, d)) for g, d in obs_dims.items()]
    return np.dtype(fields)


class ReplayBuffer:
    """FIFO ring of 1-step transitions from `num_envs` lockstep envs, optionally mirrored to a directory.

    Args:
        obs_dims: observation group name -> dim; every `add` must give these groups (others are ignored).
        action_dim: action size.
        capacity: transitions kept (rounded down to a multiple of `num_envs`); the oldest step is overwritten.
        num_envs: envs per `add` call.
        directory: if set, every step is appended to chunk files there; an existing buffer directory is
            re-opened (its transitions restored, appending continues). Dims must match what it was written with.
        chunk_bytes: approximate size of one chunk file.
    """

    def __init__(self, obs_dims: Mapping[str, int], action_dim: int, capacity: int, num_envs: int = 1,
                 directory: str | Path | None = None, chunk_bytes: int = 32 << 20) -> None:
        if num_envs < 1 or capacity < num_envs:
            raise ValueError(f"ReplayBuffer needs num_envs >= 1 and capacity >= num_envs, got {capacity=} {num_envs=}")
        self.obs_dims = {g: int(d) for g, d in obs_dims.items()}
        self.action_dim = int(action_dim)
        self.num_envs = num_envs
        self.steps = capacity // num_envs  # ring length in steps
        self.capacity = self.steps * num_envs
        n = self.capacity
        self._obs = {g: np.zeros((n, d), np.float32) for g, d in self.obs_dims.items()}
        self._next_obs = {g: np.zeros((n, d), np.float32) for g, d in self.obs_dims.items()}
        self._action = np.zeros((n, self.action_dim), np.float32)
        self._reward = np.zeros(n, np.float32)
        self._terminated = np.zeros(n, bool)
        self._done = np.zeros(n, bool)  # terminated or truncated: where n-step sums stop
        self._ptr = 0  # next step slot to write
        self._size = 0  # steps stored
        self.directory = Path(directory) if directory is not None else None
        self._dtype = record_dtype(self.obs_dims, self.action_dim, num_envs)
        self._file = None
        if self.directory is not None:
            self._open_directory(chunk_bytes)

    def __len__(self) -> int:
        """Transitions stored."""
        return self._size * self.num_envs

    # ---- writing -------------------------------------------------------------------------------------------

    def add(self, obs: Mapping[str, np.ndarray | torch.Tensor], action: np.ndarray | torch.Tensor,
            reward: np.ndarray | torch.Tensor, next_obs: Mapping[str, np.ndarray | torch.Tensor],
            terminated: np.ndarray | torch.Tensor, truncated: np.ndarray | torch.Tensor) -> None:
        """Store one lockstep env step (every argument has leading dim `num_envs`).

        `next_obs` of an env whose episode just ended must be its final observation, not the reset one:
        a truncated episode bootstraps from it.
        """
        rec = np.zeros(1, self._dtype)
        for g in self.obs_dims:
            if g not in obs or g not in next_obs:
                raise KeyError(f"ReplayBuffer.add: observation group '{g}' missing (buffer has {sorted(self.obs_dims)})")
            rec[f"obs/{g}"][0] = _np(obs[g])
            rec[f"next_obs/{g}"][0] = _np(next_obs[g])
        rec["action"][0] = _np(action)
        rec["reward"][0] = _np(reward)
        rec["terminated"][0] = _np(terminated)
        rec["truncated"][0] = _np(truncated)
        self._persist(rec)
        self._store(rec)

    def _persist(self, recs: np.ndarray) -> None:
        """Append records to the directory (if any), one write() each."""
        if self._file is None:
            return
        recs["magic"], recs["session"] = MAGIC, self._session
        for rec in recs:
            raw = bytearray(rec.tobytes())
            raw[4:8] = zlib.crc32(raw[8:]).to_bytes(4, "little")
            self._append(bytes(raw))

    def _store(self, recs: np.ndarray, session_break: np.ndarray | None = None) -> None:
        """Copy records (one step each) into the ring, oldest first."""
        k = len(recs)
        if k == 0:
            return
        if k > self.steps:  # only the newest `steps` survive anyway
            recs = recs[-self.steps:]
            session_break = None if session_break is None else session_break[-self.steps:]
            k = self.steps
        slots = (self._ptr + np.arange(k)) % self.steps
        rows = (slots[:, None] * self.num_envs + np.arange(self.num_envs)).reshape(-1)
        e = self.num_envs
        for g, d in self.obs_dims.items():
            self._obs[g][rows] = recs[f"obs/{g}"].reshape(k * e, d)
            self._next_obs[g][rows] = recs[f"next_obs/{g}"].reshape(k * e, d)
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
        truncated otherwise, so n-step returns never run from one episode into the next.

        Args:
            episodes: e.g. the list from `s2r.real.episodes.read_episodes`.
            capacity: default: exactly the number of transitions.
            groups: observation groups to keep (default: all), e.g. those of the online buffer it is mixed with.
        """
        episodes = list(episodes)
        if not episodes:
            raise ValueError("ReplayBuffer.from_episodes needs at least one episode")
        keep = list(groups) if groups is not None else list(episodes[0].obs)
        missing = [g for g in keep if g not in episodes[0].obs]
        if missing:
            raise ValueError(f"episodes have no observation group(s) {missing} (they have {sorted(episodes[0].obs)})")
        obs_dims = {g: int(episodes[0].obs[g].shape[1]) for g in keep}
        action_dim = int(episodes[0].actions.shape[1])
        total = sum(len(ep.actions) for ep in episodes)
        buf = cls(obs_dims, action_dim, capacity or max(total, 1), num_envs=1)
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
        bad = [g for g, d in self.obs_dims.items() if g not in episode.obs or episode.obs[g].shape[1:] != (d,)]
        if bad or episode.actions.shape[1:] != (self.action_dim,):
            raise ValueError(f"episode from '{episode.source}' does not fit the buffer: observation groups {bad} "
                             f"missing or of another width, or action width {episode.actions.shape[1:]} != "
                             f"({self.action_dim},)")
        recs = np.zeros(t, self._dtype)
        for g in self.obs_dims:
            recs[f"obs/{g}"][:, 0] = episode.obs[g][:-1]
            recs[f"next_obs/{g}"][:, 0] = episode.obs[g][1:]
        recs["action"][:, 0] = episode.actions
        recs["reward"][:, 0] = episode.rewards
        recs["terminated"][-1, 0] = bool(episode.terminated)
        recs["truncated"][-1, 0] = not episode.terminated
        self._persist(recs)
        self._store(recs)

    # ---- disk ----------------------------------------------------------------------------------------------

    def sync(self) -> None:
        """fsync the open chunk file (and the directory): survive a power cut, not only a process kill."""
        if self._file is not None:
            os.fsync(self._file.fileno())
            _fsync_dir(self.directory)

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
        return {"format": FORMAT, "version": VERSION, "obs_dims": self.obs_dims, "action_dim": self.action_dim,
                "num_envs": self.num_envs, "record_bytes": self._dtype.itemsize}

    def _open_directory(self, chunk_bytes: int) -> None:
        d = self.directory
        assert d is not None
        d.mkdir(parents=True, exist_ok=True)
        meta_path = d / "meta.json"
        self._record_bytes = self._dtype.itemsize
        self._chunk_records = max(1, chunk_bytes // self._record_bytes)
        self._chunks: list[list] = []  # [path, records] oldest first
        if meta_path.exists():
            self._check_meta(json.loads(meta_path.read_text()))
            self._session = self._restore()
        else:
            tmp = d / "meta.json.tmp"
            tmp.write_text(json.dumps(self._meta(), indent=2) + "\n")
            os.replace(tmp, meta_path)
            _fsync_dir(d)
            self._session = 0
        if not self._chunks or self._chunks[-1][1] >= self._chunk_records:
            self._new_chunk()
        # buffering=0: each record reaches the OS in one write() call, nothing waits in a Python buffer.
        self._file = open(self._chunks[-1][0], "ab", buffering=0)  # noqa: SIM115 (lives as long as the buffer)

    def _check_meta(self, meta: dict) -> None:
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(f"{self.directory} is not an s2r replay buffer of format version {VERSION} "
                             f"(meta.json says {meta.get('format')} v{meta.get('version')})")
        want = self._meta()
        diffs = [f"{k}: directory has {meta.get(k)}, buffer wants {want[k]}"
                 for k in ("obs_dims", "action_dim", "num_envs") if meta.get(k) != want[k]]
        if diffs:
            raise ValueError(f"replay directory {self.directory} was written for other data: " + "; ".join(diffs)
                             + ". Use a new directory or the original dims.")

    def _restore(self) -> int:
        """Load every chunk into the ring, oldest first; return the session number for new records."""
        assert self.directory is not None
        rb = self._record_bytes
        paths = sorted(self.directory.glob("chunk_*.bin"))
        parts, positions, offset = [], [], 0
        for i, path in enumerate(paths):
            raw = path.read_bytes()
            whole = len(raw) // rb
            recs = np.frombuffer(raw[: whole * rb], self._dtype)
            crc_ok = [zlib.crc32(raw[k * rb + 8:(k + 1) * rb]) == c for k, c in enumerate(recs["crc"].tolist())]
            ok = (recs["magic"] == MAGIC) & np.array(crc_ok, bool).reshape(-1)
            torn = len(raw) - whole * rb
            if torn or not ok.all():
                warnings.warn(f"replay chunk {path}: dropped {int((~ok).sum())} corrupt record(s) and {torn} byte(s) "
                              "of a torn record (the writing process was probably killed mid-write)", stacklevel=3)
            count = whole
            if i == len(paths) - 1 and (torn or not ok[-1:].all()):
                # Cut the damaged tail so that new records start on a record boundary.
                count = int(np.flatnonzero(ok)[-1] + 1) if ok.any() else 0
                os.truncate(path, count * rb)
            parts.append(recs[ok])
            positions.append(offset + np.flatnonzero(ok))
            offset += whole
            self._chunks.append([path, count])
        if not parts or sum(len(p) for p in parts) == 0:
            return 0
        recs = np.concatenate(parts)
        pos = np.concatenate(positions)
        # An episode cannot continue across a dropped record or a restart (a new session): the step before
        # either is stored as truncated, so n-step sums stop there and bootstrap from its next observation.
        brk = np.ones(len(recs), bool)
        brk[:-1] = (np.diff(pos) > 1) | (recs["session"][1:] != recs["session"][:-1])
        self._store(recs, brk)
        return int(recs["session"].max()) + 1

    def _new_chunk(self) -> None:
        assert self.directory is not None
        idx = int(self._chunks[-1][0].stem.split("_")[1]) + 1 if self._chunks else 0
        path = self.directory / f"chunk_{idx:08d}.bin"
        path.touch()
        self._chunks.append([path, 0])

    def _append(self, raw: bytes) -> None:
        if self._chunks[-1][1] >= self._chunk_records:
            self._file.close()
            self._new_chunk()
            self._file = open(self._chunks[-1][0], "ab", buffering=0)  # noqa: SIM115
        self._file.write(raw)
        self._chunks[-1][1] += 1
        # Delete the oldest chunk once the ring has overwritten all of it.
        while len(self._chunks) > 1 and sum(c[1] for c in self._chunks[1:]) >= self.steps:
            self._chunks.pop(0)[0].unlink(missing_ok=True)


def sample_mixed(online: ReplayBuffer, demo: ReplayBuffer | None, batch_size: int, n_step: int = 1,
                 gamma: float = 0.99, generator: torch.Generator | None = None) -> Batch:
    """Symmetric sampling (RLPD): half the batch from `online`, half from `demo`.

    All of it comes from `online` when `demo` is None or empty (and all from `demo` while `online` is empty).
    """
    has_demo = demo is not None and len(demo) > 0
    if not has_demo or len(online) == 0:
        src = online if len(online) > 0 or not has_demo else demo
        return src.sample(batch_size, n_step, gamma, generator)
    assert demo is not None
    n_on = batch_size - batch_size // 2
    a = online.sample(n_on, n_step, gamma, generator)
    b = demo.sample(batch_size - n_on, n_step, gamma, generator)
    cat = torch.cat
    return Batch(obs={g: cat([a.obs[g], b.obs[g]]) for g in a.obs}, action=cat([a.action, b.action]),
                 reward=cat([a.reward, b.reward]), next_obs={g: cat([a.next_obs[g], b.next_obs[g]]) for g in a.next_obs},
                 discount=cat([a.discount, b.discount]))


def _np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _fsync_dir(path: Path | None) -> None:
    if path is None:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
