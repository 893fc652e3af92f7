"""Bad input on the HIL link: malformed and oversized messages, tokens, NaN, mixed-up spools, damaged files."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from s2r.policies.hil_link_server import INBOX_SUFFIX, HilLearnerLink
from s2r.real.hil_link import HilActorLink
from s2r.real.hil_spool import Spool
from s2r.real.hil_wire import (
    KIND_REFUSED,
    TOKEN_METADATA_KEY,
    UPLOAD_METHOD,
    LinkFormatError,
    decode,
    encode,
    record,
    scan_records,
)

from tests.real.hil_link_helpers import FAST, actor, exactly_once, inbox_counts, transition, wait_for


def _upload(port: int, request: bytes, token: str | None = None) -> bytes:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        md = ((TOKEN_METADATA_KEY, token),) if token else None
        return ch.unary_unary(UPLOAD_METHOD)(request, timeout=2.0, metadata=md)


def _batch(items: list[bytes], seqs: list[int], actor_id: str = "raw", **over: object) -> bytes:
    return encode({"actor_id": actor_id, "spool_id": "s", "seqs": np.array(seqs, np.int64),
                   "sizes": np.array([len(b) for b in items], np.int64),
                   "blob": np.frombuffer(b"".join(items), np.uint8), **over})


def test_encode_decode_round_trip_and_refusals() -> None:
    payload = {"a": np.arange(6, dtype=">i4").reshape(2, 3), "img": np.zeros((2, 4, 4, 3), np.uint8),
               "r": 0.5, "n": -3, "flag": True, "who": "operator", "f32": np.float32(1.5), "empty": np.zeros((0, 2))}
    out = decode(encode(payload))
    assert out.keys() == payload.keys()
    assert out["a"].dtype == np.dtype("<i4") and (out["a"] == payload["a"]).all()
    assert (out["r"], out["n"], out["flag"], out["who"], out["f32"]) == (0.5, -3, True, "operator", 1.5)
    assert type(out["flag"]) is bool and type(out["n"]) is int
    for bad, match in [({"x": np.array([object()])}, "carries"), ({"x": [1, 2]}, "list"), ({"": 1}, "name"),
                       ({"x": 1 << 70}, "int64"), ({"x": np.zeros(3, np.complex64)}, "carries")]:
        with pytest.raises(LinkFormatError, match=match):
            encode(bad)
    good = encode({"x": np.ones(3, np.float32)})
    head_len = int.from_bytes(good[4:8], "little")
    broken = [b"", b"NOPE" + good[4:], good[:4] + (10**6).to_bytes(4, "little") + good[8:], good[:-1], good + b"\0",
              good[:8] + b"{" * head_len + good[8 + head_len:],
              good.replace(b'"float32"', b'"floatXX"'),
              encode({"x": 1}).replace(b'"scalar"', b'"array!"')]
    for msg in broken:
        with pytest.raises(LinkFormatError, match="malformed"):
            decode(msg)


def test_spool_cuts_a_torn_tail_and_skips_a_damaged_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "arm")
    for i in range(10):
        spool.append(encode(transition(i)))
    spool.close()
    seg = next(tmp_path.glob("seg_*.bin"))
    whole = seg.read_bytes()
    seg.write_bytes(whole + record(1, 10, encode(transition(10)))[:30])  # a kill mid-write of number 10
    again = Spool(tmp_path, "arm")
    assert again.next_seq == 10 and seg.stat().st_size == len(whole)
    raw = bytearray(seg.read_bytes())
    third = [r for r in scan_records(bytes(raw))][3]
    raw[third.offset + 30] ^= 0xFF  # disk damage inside record 3
    again.close()
    seg.write_bytes(bytes(raw))
    third_time = Spool(tmp_path, "arm")
    batch, _ = third_time.read_batch(100, 1 << 20)
    assert [s for s, _ in batch] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    third_time.close()
    assert third_time.corrupt >= 1
    with pytest.raises(LinkFormatError, match="belongs to actor 'arm'"):
        Spool(tmp_path, "other")
    held = Spool(tmp_path, "arm")
    with pytest.raises(LinkFormatError, match="in use by another HilActorLink"):
        Spool(tmp_path, "arm")
    held.close()
    Spool(tmp_path, "arm").close()  # the lock went with the close


def test_malformed_requests_are_refused_and_the_server_stays_up(tmp_path: Path) -> None:
    srv = HilLearnerLink(inbox_dir=tmp_path / "inbox")
    port = srv.start()
    try:
        good = encode(transition(0))
        for req in [b"garbage", _batch([good], [0], actor_id="../etc"), _batch([good, good], [1, 0]),
                    _batch([good], [0], sizes=np.array([5], np.int64)), encode({"actor_id": "raw"})]:
            with pytest.raises(grpc.RpcError) as e:
                _upload(port, req)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "malformed" in e.value.details()
        # a well-formed batch with one broken transition: that one is refused and kept as refused, the rest stored
        reply = decode(_upload(port, _batch([good, b"S2RMjunk", encode(transition(2))], [0, 1, 2])))
        assert (reply["stored"], reply["refused"], reply["high"]) == (2, 1, 2)
        assert srv.malformed == 5 and [s for _, s, _ in srv.drain()] == [0, 2]
        with actor(port, tmp_path / "spool") as a:  # and real actors carry on
            a.send(transition(0))
            assert a.flush(5)
    finally:
        srv.stop(0)


def test_oversized_messages_are_refused_without_harm(tmp_path: Path) -> None:
    srv = HilLearnerLink(inbox_dir=tmp_path / "inbox", max_message_bytes=64 << 10, chunk_bytes=32 << 10)
    port = srv.start()
    try:
        with pytest.raises(grpc.RpcError) as e:
            _upload(port, b"\0" * (100 << 10))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        big = {**transition(3), "obs": np.zeros(20_000, np.float32)}  # 80 kB: over this learner's limit
        with actor(port, tmp_path / "spool") as a:
            for i in range(6):
                a.send(big if i == 3 else transition(i))
            assert a.flush(5), a.stats()
            assert a.stats().rejected == 1 and a.connected
            with pytest.raises(LinkFormatError, match="exceeds the link's limit"):
                a.send({"obs": np.zeros(2 << 20, np.float32)})  # over the actor's own 4 MB limit: refused at once
        assert sorted(inbox_counts(srv.inbox_dir)) == [0, 1, 2, 4, 5]
    finally:
        srv.stop(0)


def test_token_required_beyond_localhost(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="without a token"):
        HilLearnerLink("0.0.0.0:0", inbox_dir=tmp_path / "inbox")
    srv = HilLearnerLink("0.0.0.0:0", inbox_dir=tmp_path / "inbox", token="s3cret")
    port = srv.start()
    srv.publish_weights(1, b"weights", {})
    try:
        for token in (None, "wrong"):
            with pytest.raises(grpc.RpcError) as e:
                _upload(port, _batch([], []), token)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with actor(port, tmp_path / f"spool-{token}", token=token) as a:
                a.send(transition(0))
                wait_for(lambda a=a: a.stats().last_error is not None, 5, "the refusal")
                time.sleep(0.2)
                assert "UNAUTHENTICATED" in a.stats().last_error and not a.connected
                assert a.stats().acked == 0 and a.latest_weights() is None
        with actor(port, tmp_path / "spool-ok", token="s3cret") as a:
            a.send(transition(0))
            assert a.flush(5)
            wait_for(lambda: a.latest_weights() is not None, 5, "weights")
        assert srv.actors()[0].stored == 1
    finally:
        srv.stop(0)


def test_nan_transitions_are_refused_counted_and_final(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    srv = HilLearnerLink(inbox_dir=inbox)
    port = srv.start()
    with actor(port, tmp_path / "spool") as a:
        for i in range(10):
            tr = transition(i)
            if i == 4:
                tr["obs"] = np.array([0, np.nan] * 4, np.float32)
            if i == 7:
                tr["reward"] = float("inf")
            a.send(tr)
        assert a.flush(5) and a.connected
        assert a.stats().refused == 2 and srv.actors()[0].refused == 2
    assert [s for _, s, _ in srv.drain()] == [0, 1, 2, 3, 5, 6, 8, 9]
    srv.stop(0)
    refused = [r.seq for r in scan_records((inbox / f"arm{INBOX_SUFFIX}").read_bytes()) if r.kind == KIND_REFUSED]
    assert refused == [4, 7]
    # after a learner restart the refusal stands: the re-sent transition is a duplicate, not stored
    srv2 = HilLearnerLink(inbox_dir=inbox)
    port2 = srv2.start()
    try:
        (tmp_path / "spool" / "acked").unlink()
        with HilActorLink(f"127.0.0.1:{port2}", spool_dir=tmp_path / "spool", actor_id="arm", config=FAST) as a:
            wait_for(lambda: srv2.actors()[0].duplicates >= 1, 5, "the re-sent records")
        assert srv2.actors()[0].stored == 0 and 4 not in inbox_counts(inbox)
    finally:
        srv2.stop(0)


def test_same_actor_id_from_another_spool_is_refused(tmp_path: Path) -> None:
    srv = HilLearnerLink(inbox_dir=tmp_path / "inbox")
    port = srv.start()
    try:
        with actor(port, tmp_path / "spool") as a:
            a.send(transition(0))
            assert a.flush(5)
        with actor(port, tmp_path / "elsewhere") as b:  # same actor_id, fresh spool: its numbers would collide
            b.send(transition(0))
            wait_for(lambda: b.stats().last_error is not None, 5, "the refusal")
            assert "FAILED_PRECONDITION" in b.stats().last_error and "original spool_dir" in b.stats().last_error
        assert exactly_once(srv.inbox_dir, 1)
    finally:
        srv.stop(0)


def test_inbox_torn_tail_is_cut_and_a_headless_inbox_is_named(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    srv = HilLearnerLink(inbox_dir=inbox)
    port = srv.start()
    with actor(port, tmp_path / "spool") as a:
        for i in range(20):
            a.send(transition(i))
        assert a.flush(5)
        srv.stop(0)
        path = inbox / f"arm{INBOX_SUFFIX}"
        size = path.stat().st_size
        with open(path, "ab") as f:  # what a learner killed mid-write leaves behind
            f.write(record(1, 20, encode(transition(20)))[:40])
        srv2 = HilLearnerLink(f"127.0.0.1:{port}", inbox_dir=inbox)
        srv2.start()
        try:
            assert path.stat().st_size == size
            for i in range(20, 30):
                a.send(transition(i))
            assert a.flush(5)
        finally:
            srv2.stop(0)
    assert exactly_once(inbox, 30)
    (inbox / f"ghost{INBOX_SUFFIX}").write_bytes(b"\0" * 100)
    with pytest.raises(LinkFormatError, match=r"ghost\.inbox has no intact actor record"):
        HilLearnerLink(inbox_dir=inbox).start()
