"""The robot side of the human-in-the-loop link: send transitions to the learner, receive its weights.

`HilActorLink.send` never waits for the network: it appends the transition to a durable spool on disk
(`s2r.real.hil_spool`) and returns its sequence number. A background thread uploads the spool in batches
over gRPC and trims it when the learner acknowledges; another holds a server stream of weights open and keeps
the newest complete version. Both reconnect by themselves with backoff, every call carries a deadline, and
while the learner is away the actor keeps spooling and keeps the last good weights. After a restart with the
same `spool_dir` and `actor_id` the sequence continues and unacknowledged records are sent again; the learner
drops the ones it already holds (inserts are idempotent by actor and sequence number).

Wire and disk formats: `s2r.real.hil_wire`. The learner side: `s2r.policies.hil_link_server`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from s2r.real.hil_spool import Spool, write_atomic
from s2r.real.hil_wire import (
    TOKEN_METADATA_KEY,
    UPLOAD_METHOD,
    WEIGHTS_METHOD,
    LinkFormatError,
    Scalar,
    decode,
    encode,
)

log = logging.getLogger(__name__)
_ENVELOPE_BYTES = 4096  # room for a batch's header around its transitions


def _grpc() -> Any:
    # Imported on first use, not at the top: s2r.real must import on a robot installed without the `hil` extra.
    try:
        import grpc
    except ImportError:
        raise ImportError("the HIL link needs grpcio: pip install 's2r[hil]' on this computer") from None
    return grpc


@dataclass(frozen=True, kw_only=True)
class ActorLinkConfig:
    """Tuning of the actor's link; the defaults suit a 10-100 Hz loop on a LAN."""

    batch_items: int = 256  # transitions per upload call at most
    batch_bytes: int = 1 << 20  # and bytes per upload call at most (a single larger transition goes alone)
    max_message_bytes: int = 4 << 20  # what one transition (and one weights chunk) may take; match the learner
    stream_s: float = 10.0  # deadline of one weights stream; it is opened again when it ends
    backoff_s: tuple[float, float] = (0.05, 2.0)  # first and largest wait before reconnecting
    poll_s: float = 0.01  # how often the uploader looks for new transitions
    heartbeat_s: float = 1.0  # an empty upload this often when idle, so `connected` stays true
    fsync_s: float = 1.0  # fsync the spool this often (a process kill loses nothing anyway; a power cut might)
    segment_bytes: int = 16 << 20  # spool file size before the next one is started

    def __post_init__(self) -> None:
        if self.batch_items < 1 or self.batch_bytes < 1 or self.max_message_bytes <= _ENVELOPE_BYTES:
            raise ValueError("ActorLinkConfig: batch_items, batch_bytes must be >= 1 and max_message_bytes > 4096")
        if not 0 < self.backoff_s[0] <= self.backoff_s[1]:
            raise ValueError(f"ActorLinkConfig.backoff_s {self.backoff_s} must be (first, largest) with 0 < first <= largest")


@dataclass(frozen=True)
class ActorLinkStats:
    """Counters of one `HilActorLink` (this process) and the state of its spool."""

    sent: int  # send() calls
    acked: int  # transitions the learner acknowledged
    pending: int  # spooled, not acknowledged (includes those of an earlier process on the same spool)
    reconnects: int  # times the link came back after being lost
    connected: bool
    next_seq: int
    refused: int  # transitions the learner refused (NaN/inf, malformed); acknowledged, never sent again
    rejected: int  # transitions the learner's size limit refused; dropped from the spool
    weights_version: int | None
    last_error: str | None


class HilActorLink:
    """Non-blocking transition upload and weights download for one actor.

    Args:
        address: the learner, "host:port".
        spool_dir: this actor's spool (created if missing); keep it across restarts.
        actor_id: the actor's name at the learner (1-64 of [A-Za-z0-9_.-]); one spool_dir per actor_id.
        token: the learner's shared token (required when the learner listens beyond localhost).
        deadline_s: deadline of every upload call.
        config: tuning.
    """

    def __init__(self, address: str, *, spool_dir: Path, actor_id: str, token: str | None = None,
                 deadline_s: float = 2.0, config: ActorLinkConfig | None = None) -> None:
        grpc = _grpc()
        self.config = cfg = config or ActorLinkConfig()
        self.address, self.actor_id, self.deadline_s = address, actor_id, deadline_s
        self._spool = Spool(Path(spool_dir), actor_id, segment_bytes=cfg.segment_bytes)
        self._max_transition = cfg.max_message_bytes - _ENVELOPE_BYTES
        self._metadata = ((TOKEN_METADATA_KEY, token),) if token else ()
        self._channel = grpc.insecure_channel(address, options=[
            ("grpc.max_send_message_length", cfg.max_message_bytes),
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            # gRPC's own reconnect backoff grows to 2 minutes; a robot waiting on its learner wants seconds.
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", int(cfg.backoff_s[1] * 1000)),
            ("grpc.enable_retries", 0),
        ])
        self._upload = self._channel.unary_unary(UPLOAD_METHOD)
        self._weights_rpc = self._channel.unary_stream(WEIGHTS_METHOD)
        self._stop = threading.Event()
        self._stream: Any = None  # the open weights stream, cancelled by close()
        self._weights: tuple[int, bytes, dict] | None = self._load_weights()
        self._pending_meta = (-1, "{}")  # (version, metadata JSON) of the weights being reassembled
        self._connected = False
        self._ever_connected = False
        self._sent = self._acked = self._reconnects = self._refused = self._rejected = 0
        self._last_error: str | None = None
        self._threads = [threading.Thread(target=self._upload_loop, name=f"hil-upload-{actor_id}", daemon=True),
                         threading.Thread(target=self._weights_loop, name=f"hil-weights-{actor_id}", daemon=True)]
        for t in self._threads:
            t.start()

    # --- the control loop's side: both calls return at once ---------------------------------------------------

    def send(self, transition: dict[str, np.ndarray | Scalar]) -> int:
        """Spool one transition for upload; returns its sequence number (never blocks on the network).

        Raises:
            LinkFormatError: a field the link cannot carry, or a transition over the size limit.
        """
        msg = encode(transition)
        if len(msg) > self._max_transition:
            raise LinkFormatError(f"transition of {len(msg)} bytes exceeds the link's limit of {self._max_transition}; "
                                  "send smaller images or raise max_message_bytes on both actor and learner")
        seq = self._spool.append(msg)
        self._sent += 1
        return seq

    def latest_weights(self) -> tuple[int, bytes, dict] | None:
        """(version, ONNX bytes, metadata) of the newest complete weights received, or None before the first."""
        return self._weights

    @property
    def connected(self) -> bool:
        """Whether the last call to the learner succeeded."""
        return self._connected

    def stats(self) -> ActorLinkStats:
        """Counters and spool state (see `ActorLinkStats`)."""
        w = self._weights
        return ActorLinkStats(sent=self._sent, acked=self._acked, pending=self._spool.pending(),
                              reconnects=self._reconnects, connected=self._connected, next_seq=self._spool.next_seq,
                              refused=self._refused, rejected=self._rejected,
                              weights_version=None if w is None else w[0], last_error=self._last_error)

    def flush(self, timeout_s: float) -> bool:
        """Wait until the learner has acknowledged everything sent so far; False if `timeout_s` passed first."""
        end = time.monotonic() + timeout_s
        while self._spool.pending() > 0:
            if time.monotonic() > end:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Stop both threads, fsync and close the spool, close the channel. Unsent transitions stay spooled."""
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()
        for t in self._threads:
            t.join(timeout=self.deadline_s + 1.0)
        self._spool.close()
        self._channel.close()
        self._connected = False

    def __enter__(self) -> HilActorLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- background threads ----------------------------------------------------------------------------------

    def _link_state(self, ok: bool, error: str | None = None) -> None:
        if ok and not self._connected and self._ever_connected:
            self._reconnects += 1
        if ok:
            self._ever_connected = True
        elif self._connected:
            log.warning("HIL link to %s lost (%s); spooling until it is back", self.address, error)
        self._connected = ok
        if error is not None:
            self._last_error = error

    def _upload_loop(self) -> None:
        grpc = _grpc()
        cfg = self.config
        backoff, items = cfg.backoff_s[0], cfg.batch_items
        last_call = last_sync = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_sync > cfg.fsync_s:
                self._spool.sync()
                last_sync = now
            batch, cursor = self._spool.read_batch(items, cfg.batch_bytes)
            if not batch and now - last_call < cfg.heartbeat_s:
                self._stop.wait(cfg.poll_s)
                continue
            msg = encode({"actor_id": self.actor_id, "spool_id": self._spool.spool_id,
                          "seqs": np.array([s for s, _ in batch], np.int64),
                          "sizes": np.array([len(b) for _, b in batch], np.int64),
                          "blob": np.frombuffer(b"".join(b for _, b in batch), np.uint8)})
            last_call = now
            try:
                reply = decode(self._upload(msg, timeout=self.deadline_s, metadata=self._metadata))
            except grpc.RpcError as e:
                code, detail = e.code(), e.details()
                repeated = self._last_error == f"{code.name}: {detail}"
                self._link_state(code == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{code.name}: {detail}")
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED and len(batch) > 1:
                    items = max(1, len(batch) // 2)  # the learner's limit is below ours: smaller batches
                    continue
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # one transition over the learner's limit
                    log.error("the learner refused transition %d as too large (%s); dropping it", batch[0][0], detail)
                    self._rejected += 1
                    self._spool.commit(batch[0][0], cursor)
                    continue
                if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION,
                            grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED) and not repeated:
                    log.error("the learner at %s refuses this actor: %s", self.address, detail)
                self._stop.wait(backoff * (0.5 + random.random()))
                backoff = min(2 * backoff, cfg.backoff_s[1])
                continue
            except LinkFormatError as e:
                self._link_state(False, f"bad reply: {e}")
                self._stop.wait(backoff)
                continue
            self._link_state(True)
            backoff, items = cfg.backoff_s[0], cfg.batch_items
            if batch:
                self._acked += len(batch)
                self._refused += int(reply.get("refused", 0))
                self._spool.commit(batch[-1][0], cursor)

    def _weights_loop(self) -> None:
        grpc = _grpc()
        backoff = self.config.backoff_s[0]
        while not self._stop.is_set():
            have = -1 if self._weights is None else self._weights[0]
            req = encode({"actor_id": self.actor_id, "have": have})
            try:
                self._stream = self._weights_rpc(req, timeout=self.config.stream_s, metadata=self._metadata)
                if self._stop.is_set():
                    self._stream.cancel()
                parts: list[bytes] = []
                for raw in self._stream:
                    chunk = decode(raw)
                    parts = self._take_chunk(chunk, parts)
                    backoff = self.config.backoff_s[0]
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    continue  # the stream's normal end: open the next one
                if not self._stop.is_set():
                    self._stop.wait(backoff * (0.5 + random.random()))
                    backoff = min(2 * backoff, self.config.backoff_s[1])
            except LinkFormatError as e:
                log.error("bad weights chunk from %s: %s", self.address, e)
                self._stop.wait(backoff)
            finally:
                self._stream = None

    def _take_chunk(self, chunk: dict, parts: list[bytes]) -> list[bytes]:
        """Add one chunk; publish the version when its last chunk arrives whole. Returns the parts so far."""
        version, index, count = int(chunk["version"]), int(chunk["index"]), int(chunk["count"])
        if index == 0:
            parts = []
            self._pending_meta = (version, str(chunk.get("metadata", "{}")))
        if index != len(parts) or self._pending_meta[0] != version:
            return []  # a chunk out of order: drop this version, the stream sends the next whole one
        parts.append(np.asarray(chunk["data"]).tobytes())
        if index < count - 1:
            return parts
        data = b"".join(parts)
        current = self._weights
        if len(data) != int(chunk["total"]) or zlib.crc32(data) != int(chunk["crc"]):
            log.error("weights version %d arrived damaged (size or CRC); keeping the last good version", version)
        elif current is None or version > current[0]:
            self._weights = (version, data, json.loads(self._pending_meta[1]))
            self._save_weights()
        return []

    # The newest weights are kept in the spool directory too, so an actor restarted while the learner is away
    # starts with the last good policy instead of none.
    def _save_weights(self) -> None:
        version, data, meta = self._weights
        root = self._spool.root
        name = f"weights_{version:012d}.onnx"  # the JSON names its file: a kill between the two writes is harmless
        (root / (name + ".tmp")).write_bytes(data)
        os.replace(root / (name + ".tmp"), root / name)
        write_atomic(root / "weights.json", json.dumps({"version": version, "file": name, "metadata": meta}))
        for old in root.glob("weights_*.onnx"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def _load_weights(self) -> tuple[int, bytes, dict] | None:
        root = self._spool.root
        try:
            head = json.loads((root / "weights.json").read_text())
            return int(head["version"]), (root / head["file"]).read_bytes(), dict(head["metadata"])
        except (OSError, ValueError, KeyError, TypeError):  # none yet, or half of a pair: wait for the learner
            return None
