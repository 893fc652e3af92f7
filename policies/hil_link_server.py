"""The learner side of the human-in-the-loop link: a gRPC server that stores actors' transitions and streams weights.

Every transition an actor uploads is appended to that actor's inbox file before it is acknowledged, so the
inbox is the learner's durable record: after a learner restart `replay_inbox` rebuilds the replay buffer from
it, and every transition is in it exactly once. Inserts are idempotent by (actor_id, sequence number): an actor
re-sending after a lost acknowledgement or a restart gets its duplicates acknowledged and not stored again.

Inbox layout (a directory, one append-only file per actor, records as in `s2r.real.hil_wire`)::

    <inbox_dir>/<actor_id>.inbox   ACTOR record (JSON {"actor_id", "spool_id"}), then TRANSITION records (the
                                   actor's encoded transition, as sent) and REFUSED records (UTF-8 reason)

A REFUSED record keeps the number of a transition that was refused (NaN or inf in a float field, or a
malformed message) so a refusal is final: it is acknowledged, counted, and never asked for again.

Security: the server listens on localhost by default; any other address needs a shared token, which every
call must then carry in its `s2r-token` metadata (else UNAUTHENTICATED). Messages over `max_message_bytes`
are refused by gRPC with RESOURCE_EXHAUSTED before they reach a handler.

Weights are versioned and sent in chunks (`chunk_bytes`, below the message limit) on a server stream: an
actor asks with the version it has and gets only newer ones. Versions must keep increasing across a learner
restart (resume the counter from the checkpoint), or actors that hold a higher version ignore the new ones.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import os
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from s2r.real.hil_wire import (
    KIND_ACTOR,
    KIND_REFUSED,
    KIND_TRANSITION,
    SERVICE,
    TOKEN_METADATA_KEY,
    LinkFormatError,
    Payload,
    ScanResult,
    check_actor_id,
    decode,
    encode,
    non_finite_field,
    record,
    scan_records,
)

log = logging.getLogger(__name__)
INBOX_SUFFIX = ".inbox"


@dataclass(frozen=True)
class ActorInfo:
    """One actor the learner has heard from (this run or, through the inbox, an earlier one)."""

    actor_id: str
    spool_id: str
    last_seen: float | None  # time.time() of its last call in this run, None if only found in the inbox
    acked: int  # highest sequence number held (stored or refused); -1 before the first
    stored: int  # transitions stored in this run
    duplicates: int  # re-sent transitions acknowledged without storing them again, this run
    refused: int  # transitions refused (NaN/inf, malformed), this run


@dataclass
class _Inbox:
    path: Path
    spool_id: str
    fd: int
    high: int = -1
    last_seen: float | None = None
    stored: int = 0
    duplicates: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def is_loopback(bind: str) -> bool:
    """Whether "host:port" listens on this machine only ("localhost", 127.0.0.0/8, ::1)."""
    host = bind.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


class HilLearnerLink:
    """The learner's end of the link: stores uploads in the inbox, streams published weights.

    Args:
        bind: "host:port" to listen on; port 0 picks a free one (see `start`).
        inbox_dir: the inbox directory (created if missing); keep it across learner restarts.
        token: shared secret every call must carry; required unless `bind` is a loopback address.
        max_message_bytes: the largest request accepted (RESOURCE_EXHAUSTED above it).
        chunk_bytes: weights are streamed in chunks of this size (below `max_message_bytes`).
        fsync: fsync the inbox before acknowledging (off: a learner kill loses nothing, a power cut might).
        max_workers: server threads; each connected actor holds one for its weights stream.
    """

    def __init__(self, bind: str = "127.0.0.1:0", *, inbox_dir: Path, token: str | None = None,
                 max_message_bytes: int = 4 << 20, chunk_bytes: int = 1 << 20, fsync: bool = True,
                 max_workers: int = 32) -> None:
        if token is None and not is_loopback(bind):
            raise ValueError(f"refusing to listen on {bind} without a token: pass token=... (the actors need the same "
                             "one) or bind to 127.0.0.1")
        if not 0 < chunk_bytes <= max_message_bytes - 4096:
            raise ValueError(f"chunk_bytes {chunk_bytes} must be positive and at least 4096 below max_message_bytes")
        self.bind, self.inbox_dir, self.fsync = bind, Path(inbox_dir), fsync
        self.max_message_bytes, self.chunk_bytes, self.max_workers = max_message_bytes, chunk_bytes, max_workers
        self._token = token.encode() if token else None
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._inboxes: dict[str, _Inbox] = {}
        self._new: list[tuple[str, int, Payload]] = []
        self._weights: tuple[int, list[bytes]] | None = None
        self._server: Any = None
        self._stopping = False
        self.malformed = 0  # requests refused as malformed

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> int:
        """Open the inbox (cutting a torn record a kill left behind) and start serving; returns the bound port."""
        self.inbox_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.inbox_dir.glob(f"*{INBOX_SUFFIX}")):
            self._open_inbox(path)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="hil"),
                                   options=[("grpc.max_receive_message_length", self.max_message_bytes),
                                            ("grpc.max_send_message_length", self.max_message_bytes),
                                            ("grpc.so_reuseport", 0)])
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            "Upload": grpc.unary_unary_rpc_method_handler(self._on_upload),
            "Weights": grpc.unary_stream_rpc_method_handler(self._on_weights),
        }),))
        try:
            port = self._server.add_insecure_port(self.bind)
        except RuntimeError:
            port = 0
        if not port:
            raise OSError(f"could not listen on {self.bind}: is the address this machine's and the port free?")
        self._server.start()
        return port

    def stop(self, grace_s: float = 0.5) -> None:
        """End open streams, stop the server (in-flight calls get `grace_s`), close the inbox files."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.stop(grace_s).wait()
        with self._lock:
            for inbox in self._inboxes.values():
                with inbox.lock:  # a handler still writing (grace over) finishes its write first
                    os.close(inbox.fd)
                    inbox.fd = -1
            self._inboxes.clear()

    def _open_inbox(self, path: Path) -> None:
        res = ScanResult()
        actor_id, spool_id, high = None, "", -1
        for rec in scan_records(path.read_bytes(), res):
            if rec.kind == KIND_ACTOR and actor_id is None:
                head = json.loads(bytes(rec.payload))
                actor_id, spool_id = head["actor_id"], head["spool_id"]
            elif rec.kind in (KIND_TRANSITION, KIND_REFUSED):
                high = max(high, rec.seq)
        if actor_id is None:
            raise LinkFormatError(f"inbox file {path} has no intact actor record; move it away to start that actor afresh")
        if res.torn:
            log.warning("inbox %s ends in %d bytes of a record cut by a kill; cutting them off", path, res.torn)
            os.truncate(path, res.end)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._inboxes[actor_id] = _Inbox(path=path, spool_id=spool_id, fd=fd, high=high)

    # --- the training loop's side ----------------------------------------------------------------------------------

    def publish_weights(self, version: int, onnx_bytes: bytes, metadata: dict) -> None:
        """Offer new weights to every actor; `version` must exceed the last one published."""
        with self._cond:
            if self._weights is not None and version <= self._weights[0]:
                raise ValueError(f"weights version {version} is not above the last published {self._weights[0]}")
        total, crc, meta = len(onnx_bytes), zlib.crc32(onnx_bytes), json.dumps(metadata)
        count = max(1, math.ceil(total / self.chunk_bytes))
        data = np.frombuffer(onnx_bytes, np.uint8)
        chunks = [encode({"version": version, "index": i, "count": count, "total": total, "crc": crc,
                          **({"metadata": meta} if i == 0 else {}),
                          "data": data[i * self.chunk_bytes:(i + 1) * self.chunk_bytes]}) for i in range(count)]
        with self._cond:
            self._weights = (version, chunks)
            self._cond.notify_all()

    def drain(self) -> list[tuple[str, int, Payload]]:
        """(actor_id, seq, transition) stored since the last drain, in arrival order. Arrays are read-only.

        They are held in memory until drained: a learner that stops draining should stop the link (the inbox
        keeps everything anyway, and `replay_inbox` reads it back).
        """
        with self._lock:
            out, self._new = self._new, []
        return out

    def replay_inbox(self) -> Iterator[tuple[str, int, Payload]]:
        """Every stored transition in the inbox, each once, per actor in sequence order (to rebuild a buffer)."""
        for path in sorted(self.inbox_dir.glob(f"*{INBOX_SUFFIX}")):
            actor_id, last = None, -1
            for rec in scan_records(path.read_bytes()):
                if rec.kind == KIND_ACTOR and actor_id is None:
                    actor_id = json.loads(bytes(rec.payload))["actor_id"]
                elif rec.kind == KIND_TRANSITION and actor_id is not None and rec.seq > last:
                    last = rec.seq
                    yield actor_id, rec.seq, decode(rec.payload)

    def actors(self) -> list[ActorInfo]:
        """Every actor known, with its counters."""
        with self._lock:
            items = list(self._inboxes.items())
        return [ActorInfo(actor_id=a, spool_id=b.spool_id, last_seen=b.last_seen, acked=b.high, stored=b.stored,
                          duplicates=b.duplicates, refused=b.refused) for a, b in items]

    # --- gRPC handlers ---------------------------------------------------------------------------------------------

    def _check_token(self, context: grpc.ServicerContext) -> None:
        if self._token is None:
            return
        given = dict(context.invocation_metadata()).get(TOKEN_METADATA_KEY, "")
        if not hmac.compare_digest(given.encode() if isinstance(given, str) else given, self._token):
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          f"wrong or missing '{TOKEN_METADATA_KEY}' metadata: start the actor with the learner's token")

    def _malformed(self, context: grpc.ServicerContext, what: str, err: Exception) -> None:
        self.malformed += 1
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{what} is malformed: {err}")

    def _inbox_for(self, actor_id: str, spool_id: str, context: grpc.ServicerContext) -> _Inbox:
        with self._lock:
            if self._stopping:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the learner is shutting down; send again later")
            inbox = self._inboxes.get(actor_id)
            if inbox is None:
                path = self.inbox_dir / f"{actor_id}{INBOX_SUFFIX}"
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                os.write(fd, record(KIND_ACTOR, 0, json.dumps({"actor_id": actor_id, "spool_id": spool_id}).encode()))
                inbox = self._inboxes[actor_id] = _Inbox(path=path, spool_id=spool_id, fd=fd)
                log.info("actor '%s' joined (inbox %s)", actor_id, path)
        if inbox.spool_id != spool_id:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"actor '{actor_id}' already sent transitions from another spool; restart it with its "
                          "original spool_dir, or give this one a new actor_id")
        inbox.last_seen = time.time()
        return inbox

    def _on_upload(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._check_token(context)
        try:
            req = decode(request)
            actor_id, spool_id = check_actor_id(req["actor_id"]), str(req["spool_id"])
            seqs, sizes, blob = req["seqs"], req["sizes"], req["blob"]
            if not (isinstance(seqs, np.ndarray) and isinstance(sizes, np.ndarray) and isinstance(blob, np.ndarray)
                    and seqs.dtype == np.int64 and sizes.dtype == np.int64 and blob.dtype == np.uint8
                    and seqs.shape == sizes.shape and seqs.ndim == 1 and (sizes >= 0).all()
                    and int(sizes.sum()) == blob.size and (np.diff(seqs) > 0).all() and (seqs >= 0).all()):
                raise LinkFormatError("seqs/sizes must be matching int64 vectors (seqs rising, sizes summing to blob)")
        except (LinkFormatError, KeyError) as e:
            self._malformed(context, "upload request", e)
        inbox = self._inbox_for(actor_id, spool_id, context)
        ends = np.cumsum(sizes).tolist()
        raw = blob.tobytes() if len(seqs) else b""
        out, new, dup, refused = [], [], 0, 0
        with inbox.lock:
            if inbox.fd < 0:  # the server stopped while this call waited: not stored, so not acknowledged
                context.abort(grpc.StatusCode.UNAVAILABLE, "the learner is shutting down; send again later")
            high = inbox.high
            for seq, a, b in zip(seqs.tolist(), [0, *ends][:len(ends)], ends, strict=True):
                if seq <= high:
                    dup += 1
                    continue
                item = raw[a:b]
                try:
                    transition = decode(item)
                    bad = non_finite_field(transition)
                    reason = None if bad is None else f"field '{bad}' holds NaN or inf"
                except LinkFormatError as e:
                    reason = str(e)
                if reason is None:
                    out.append(record(KIND_TRANSITION, seq, item))
                    new.append((actor_id, seq, transition))
                else:
                    log.warning("refused transition %d of actor '%s': %s", seq, actor_id, reason)
                    out.append(record(KIND_REFUSED, seq, reason.encode()))
                    refused += 1
                high = seq
            if out:  # acknowledged only once written (and, with fsync, on the platter)
                data = b"".join(out)
                if os.write(inbox.fd, data) != len(data):
                    raise OSError(f"short write to {inbox.path}: is the disk full?")
                if self.fsync:
                    os.fsync(inbox.fd)
            inbox.high = high
            inbox.stored += len(new)
            inbox.duplicates += dup
            inbox.refused += refused
        if new:
            with self._lock:
                self._new.extend(new)
        return encode({"high": high, "stored": len(new), "duplicates": dup, "refused": refused})

    def _on_weights(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self._check_token(context)
        try:
            req = decode(request)
            have, actor_id = int(req["have"]), check_actor_id(req["actor_id"])
        except (LinkFormatError, KeyError, TypeError, ValueError) as e:
            self._malformed(context, "weights request", e)
        with self._lock:
            if actor_id in self._inboxes:
                self._inboxes[actor_id].last_seen = time.time()
        while context.is_active():
            with self._cond:
                if self._stopping:
                    return
                if self._weights is None or self._weights[0] <= have:
                    self._cond.wait(0.25)  # short, so a stream whose actor went away ends soon
                weights = self._weights
            if weights is not None and weights[0] > have:
                yield from weights[1]
                have = weights[0]
