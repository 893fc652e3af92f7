"""The replay buffer's on-disk records: observation group specs, the record layout, image blobs, chunk scanning.

Disk format, version 2 (a directory). `meta.json` names every observation group with its shape and dtype
(`"groups": {"policy": {"shape": [20], "dtype": "float32"}, "image": {"shape": [84, 84, 3], "dtype":
"uint8"}}`), `action_dim` and `num_envs`. Steps are appended to `chunk_00000000.bin`, `chunk_00000001.bin`,
... Each file is a plain sequence of records, one per `ReplayBuffer.add`. A record starts with its fixed
part in the numpy structured dtype of `record_dtype()` (little-endian): a magic number, a CRC-32 of the rest
of the record, a session number, then every float32 field of the step (observations, action, reward,
terminated, truncated, next observations). With uint8 groups the fixed part also holds `blob_bytes`, and
that many bytes follow it: one zlib stream of the uint8 groups in spec order, each as its (num_envs,
*shape) observations then its next observations. The CRC covers the blob too, and every record is
self-contained (no frame refers to another record), so a damaged record loses one step and nothing else.
Version 1 (float vectors only, `"obs_dims": {group: dim}` in meta.json) has the same records and is read.

Damage. Fixed-size records (no uint8 group) are checked all at once; a bad one is skipped. Records with a
blob are walked in order; after a damaged one, reading resumes at the next magic number whose record
passes its CRC (a false match inside image bytes fails it). Bytes after the last intact record are a torn
tail when shorter than the record their header announces (a kill mid-write), corrupt otherwise. A run of
adjacent damaged records with a blob is reported as one corrupt record (their count is not knowable).
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "s2r-replay"
VERSION = 2
MAGIC = 0x53325250  # "S2RP"
_MAGIC_BYTES = MAGIC.to_bytes(4, "little")
DTYPES = ("float32", "uint8")

GroupSpec = tuple[tuple[int, ...], str]  # (shape of one observation, dtype name)


def group_specs(obs_dims: Mapping[str, int | Iterable[int]],
                obs_dtypes: Mapping[str, str] | None = None) -> dict[str, GroupSpec]:
    """Group -> (shape, dtype): an int is a float32 vector; a shape takes its dtype from `obs_dtypes`.

    Groups of `obs_dtypes` that `obs_dims` does not name are ignored (an env's full dtype map may be passed).
    """
    out: dict[str, GroupSpec] = {}
    for g, s in obs_dims.items():
        shape = (int(s),) if isinstance(s, int | np.integer) else tuple(int(v) for v in s)
        dtype = str((obs_dtypes or {}).get(g, "float32"))
        if dtype not in DTYPES or not shape or min(shape) < 1:
            raise ValueError(f"observation group '{g}' is {shape} {dtype}; the replay buffer holds non-empty "
                             f"shapes of dtype {' or '.join(DTYPES)}")
        out[g] = (shape, dtype)
    return out


def meta_groups(meta: Mapping) -> dict[str, GroupSpec]:
    """The group specs a `meta.json` of version 1 or 2 records."""
    if meta.get("version") == 1:
        return {g: ((int(d),), "float32") for g, d in meta.get("obs_dims", {}).items()}
    return {g: (tuple(int(v) for v in spec["shape"]), str(spec["dtype"])) for g, spec in meta.get("groups", {}).items()}


def record_dtype(obs_dims: Mapping[str, int | Iterable[int]], action_dim: int, num_envs: int,
                 obs_dtypes: Mapping[str, str] | None = None) -> np.dtype:
    """The numpy structured dtype of the fixed part of one record (one `add` call). Documents the format.

    uint8 groups are not in it: they follow it compressed, `blob_bytes` long.
    """
    specs = group_specs(obs_dims, obs_dtypes)
    floats = {g: s for g, (s, dt) in specs.items() if dt == "float32"}
    fields: list[tuple] = [("magic", "<u4"), ("crc", "<u4"), ("session", "<u4")]
    if len(floats) < len(specs):
        fields.append(("blob_bytes", "<u4"))
    fields += [(f"obs/{g}", "<f4", (num_envs, *s)) for g, s in floats.items()]
    fields += [("action", "<f4", (num_envs, action_dim)), ("reward", "<f4", (num_envs,)),
               ("terminated", "u1", (num_envs,)), ("truncated", "u1", (num_envs,))]
    fields += [(f"next_obs/{g}", "<f4", (num_envs, *s)) for g, s in floats.items()]
    return np.dtype(fields)


def transition_bytes(specs: Mapping[str, GroupSpec], action_dim: int) -> int:
    """RAM one transition takes in a `ReplayBuffer` (observation + next observation + action, reward, flags)."""
    obs = sum(math.prod(s) * np.dtype(dt).itemsize for s, dt in specs.values())
    return 2 * obs + 4 * action_dim + 4 + 1 + 1


def encode_record(fixed: np.ndarray, frames: Sequence[np.ndarray], level: int) -> bytes:
    """One record's bytes: `fixed` (one-element `record_dtype` array, magic and session set) + its zlib blob.

    Sets `blob_bytes` and `crc` in `fixed`'s bytes; `frames` are the uint8 arrays in blob order (none
    without uint8 groups).
    """
    blob = zlib.compress(b"".join(f.tobytes() for f in frames), level) if frames else b""
    if frames:
        fixed["blob_bytes"] = len(blob)
    raw = bytearray(fixed.tobytes())
    raw[4:8] = zlib.crc32(blob, zlib.crc32(raw[8:])).to_bytes(4, "little")
    return bytes(raw) + blob


def decode_blobs(blobs: Sequence[bytes | memoryview], shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """Blobs of k records -> one (k, *shape) uint8 array per entry of `shapes` (blob order)."""
    sizes = [math.prod(s) for s in shapes]
    flat = np.frombuffer(b"".join(zlib.decompress(b) for b in blobs), np.uint8).reshape(len(blobs), sum(sizes))
    out, a = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(flat[:, a:a + size].reshape(len(blobs), *shape))
        a += size
    return out


@dataclass(frozen=True)
class ChunkScan:
    """The intact records of one chunk file and what was dropped."""

    records: np.ndarray  # fixed parts, record_dtype
    blobs: list[memoryview]  # their image blobs (empty without uint8 groups)
    index: np.ndarray  # position of each in the file's record sequence: a gap is a dropped record
    end: int  # byte offset just after the last intact record
    slots: int  # record positions the file spans (the next file's first record follows them)
    corrupt: int  # records dropped for a wrong magic number or CRC
    torn: int  # bytes of a record cut short by a kill mid-write


def scan_chunk(raw: bytes, dtype: np.dtype) -> ChunkScan:
    """Check every record of one chunk file (see the module docstring)."""
    rb = dtype.itemsize
    if "blob_bytes" not in dtype.names:  # fixed-size records: check them all at once
        whole = len(raw) // rb
        recs = np.frombuffer(raw[: whole * rb], dtype)
        crc_ok = [zlib.crc32(raw[k * rb + 8:(k + 1) * rb]) == c for k, c in enumerate(recs["crc"].tolist())]
        ok = (recs["magic"] == MAGIC) & np.array(crc_ok, bool).reshape(-1)
        idx = np.flatnonzero(ok)
        end = int(idx[-1] + 1) * rb if len(idx) else 0
        return ChunkScan(recs[ok], [], idx, end, whole, int((~ok).sum()), len(raw) - whole * rb)
    view = memoryview(raw)
    heads, blobs, idx = [], [], []
    at, slot, corrupt, end = 0, 0, 0, 0
    while at + rb <= len(raw):
        head = np.frombuffer(raw, dtype, 1, at)
        n = rb + int(head["blob_bytes"][0])
        if head["magic"][0] == MAGIC and at + n <= len(raw) and zlib.crc32(view[at + 8:at + n]) == int(head["crc"][0]):
            corrupt += at > end  # damaged bytes were skipped to get here
            heads.append(head)
            blobs.append(view[at + rb:at + n])
            idx.append(slot + (at > end))
            slot = idx[-1] + 1
            at = end = at + n
            continue
        at = raw.find(_MAGIC_BYTES, at + 1)
        if at < 0:
            break
    torn = len(raw) - end
    if torn >= rb:  # a whole record that fails its CRC is corrupt, not torn
        head = np.frombuffer(raw, dtype, 1, end)
        if head["magic"][0] == MAGIC and rb + int(head["blob_bytes"][0]) == torn:
            corrupt, torn = corrupt + 1, 0
    recs = np.concatenate(heads) if heads else np.zeros(0, dtype)
    return ChunkScan(recs, blobs, np.array(idx, np.int64), end, slot + (end < len(raw)), corrupt, torn)


def fsync_dir(path: Path | None) -> None:
    """fsync a directory (a rename or a new file in it survives a power cut)."""
    if path is None:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
