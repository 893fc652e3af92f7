"""The actor's durable spool: every transition handed to the link is on disk before `send` returns.

Layout of a spool directory (one actor)::

    spool.json                 {"format": "s2r-hil-spool", "version": 1, "actor_id": ..., "spool_id": ...}
    seg_000000000000.bin       records (see `s2r.real.hil_wire`) with sequence numbers from the one in the name
    seg_000000004711.bin       ... the newest segment is the one being appended to; it is never deleted
    acked                      the highest sequence number the learner has acknowledged (a hint: re-sending
                               acknowledged records is harmless, the learner drops duplicates)

A segment whose records are all acknowledged is deleted. After a kill the newest segment may end in a torn
record (the one whose `append` never returned); it is cut off and its number is handed out again.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import threading
import uuid
from pathlib import Path

from s2r.real.hil_wire import (
    KIND_TRANSITION,
    RECORD_HEADER_BYTES,
    RECORD_MAGIC,
    LinkFormatError,
    ScanResult,
    check_actor_id,
    record,
    scan_records,
)

SPOOL_FORMAT = "s2r-hil-spool"
SPOOL_VERSION = 1


def _segment(root: Path, first: int) -> Path:
    return root / f"seg_{first:012d}.bin"


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path` (never half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Spool:
    """Append-only segment files of sequence-numbered records, read back in order by one uploader thread.

    `append` is called by the control loop; `read_batch`, `commit` and `sync` by the uploader. One lock guards
    the few fields both touch (the newest segment, its size, the next number); file reads happen outside it.
    """

    def __init__(self, root: Path, actor_id: str, *, segment_bytes: int = 16 << 20) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        check_actor_id(actor_id)
        self._lock_fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:  # two links on one spool would hand out the same numbers; the lock dies with its process
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise LinkFormatError(f"spool_dir {self.root} is in use by another HilActorLink; give each actor its own "
                                  "spool_dir, or close the other link first") from None
        try:
            self._open(actor_id)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._lock = threading.Lock()
        self.cursor = (self.segments[0], 0)  # where the uploader reads next
        self.closed = False

    def _open(self, actor_id: str) -> None:
        """Read or create spool.json, find the next number, cut a torn tail, open the newest segment."""
        meta_path = self.root / "spool.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if meta.get("format") != SPOOL_FORMAT or meta.get("actor_id") != actor_id:
                raise LinkFormatError(f"{meta_path} belongs to actor '{meta.get('actor_id')}', not '{actor_id}'; "
                                      "give each actor its own spool_dir")
        else:
            meta = {"format": SPOOL_FORMAT, "version": SPOOL_VERSION, "actor_id": actor_id,
                    "spool_id": uuid.uuid4().hex}
            write_atomic(meta_path, json.dumps(meta))
        self.spool_id: str = meta["spool_id"]
        acked_path = self.root / "acked"
        self.acked = int(acked_path.read_text()) if acked_path.exists() else -1
        self.segments = sorted(int(p.stem[4:]) for p in self.root.glob("seg_*.bin"))
        self.corrupt = 0
        if self.segments:
            last = _segment(self.root, self.segments[-1])
            res = ScanResult()
            seqs = [r.seq for r in scan_records(last.read_bytes(), res)]
            self.corrupt += res.corrupt
            if res.torn:  # the record whose append was cut by the kill: its number was never handed out
                os.truncate(last, res.end)
            self.next_seq = max(seqs[-1] + 1 if seqs else self.segments[-1], self.acked + 1)
        else:
            self.next_seq = self.acked + 1
            self.segments = [self.next_seq]
        self.size = _segment(self.root, self.segments[-1]).stat().st_size if self._exists(-1) else 0
        self._fd = os.open(_segment(self.root, self.segments[-1]), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _exists(self, i: int) -> bool:
        return _segment(self.root, self.segments[i]).exists()

    def append(self, payload: bytes) -> int:
        """Write one transition's message as the next record; returns its sequence number."""
        with self._lock:
            if self.closed:
                raise RuntimeError("the HIL link is closed; create a new HilActorLink to send more transitions")
            seq = self.next_seq
            rec = record(KIND_TRANSITION, seq, payload)
            if os.write(self._fd, rec) != len(rec):
                raise OSError(f"short write to the spool in {self.root}: is the disk full?")
            self.next_seq = seq + 1
            self.size += len(rec)
            if self.size >= self.segment_bytes:
                os.close(self._fd)
                self.segments.append(self.next_seq)
                self._fd = os.open(_segment(self.root, self.next_seq), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                self.size = 0
            return seq

    def pending(self) -> int:
        """Records handed out but not acknowledged yet."""
        return self.next_seq - 1 - self.acked

    def read_batch(self, max_items: int, max_bytes: int) -> tuple[list[tuple[int, bytes]], tuple[int, int]]:
        """The next unacknowledged records from the cursor (at least one if any), and the cursor after them."""
        with self._lock:
            segments, active, active_size = list(self.segments), self.segments[-1], self.size
        seg, off = self.cursor
        if seg not in segments:  # trimmed while the cursor sat at its end
            later = [s for s in segments if s > seg]
            seg, off = (later[0] if later else active), 0
        out: list[tuple[int, bytes]] = []
        total = 0
        while len(out) < max_items and total < max_bytes:
            path = _segment(self.root, seg)
            limit = active_size if seg == active else path.stat().st_size
            if off >= limit:
                if seg == active:
                    break
                seg, off = segments[segments.index(seg) + 1], 0
                continue
            with open(path, "rb") as f:
                f.seek(off)
                head = f.read(RECORD_HEADER_BYTES)
                want = max_bytes - total
                if len(head) == RECORD_HEADER_BYTES and int.from_bytes(head[:4], "little") == RECORD_MAGIC:
                    want = max(want, RECORD_HEADER_BYTES + int.from_bytes(head[8:12], "little"))
                f.seek(off)
                buf = f.read(min(limit - off, want))
            found, full, off_end = False, False, off
            for rec in scan_records(buf):
                if out and (len(out) >= max_items or total + len(rec.payload) > max_bytes):
                    full = True
                    break
                found, off_end = True, off + rec.end
                if rec.seq > self.acked:
                    out.append((rec.seq, bytes(rec.payload)))
                    total += len(rec.payload)
            if found or full:
                off = off_end
                if full:
                    break
            else:  # damaged bytes at the cursor (disk damage before a restart): skip to the next magic number
                k = buf.find(RECORD_MAGIC.to_bytes(4, "little"), 1)
                off += k if k > 0 else len(buf)
                self.corrupt += 1
        return out, (seg, off)

    def commit(self, acked: int, cursor: tuple[int, int]) -> None:
        """The learner holds everything up to `acked`: move the cursor, delete whole acknowledged segments."""
        self.cursor = cursor
        if acked <= self.acked:
            return
        self.acked = acked
        write_atomic(self.root / "acked", str(acked))
        with self._lock:
            segments = list(self.segments)
        for first, nxt in itertools.pairwise(segments):
            if nxt - 1 <= acked:
                _segment(self.root, first).unlink(missing_ok=True)
                with self._lock:
                    self.segments.remove(first)

    def sync(self) -> None:
        """fsync the newest segment, so what was appended survives a power cut too (a kill it survives anyway)."""
        with self._lock:
            if self.closed:
                return
            fd = os.dup(self._fd)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """fsync and close the newest segment; later `append` calls raise."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            os.fsync(self._fd)
            os.close(self._fd)
            os.close(self._lock_fd)  # releases the flock
