"""The human-in-the-loop link's byte formats: messages on the wire and records on disk. Numpy + stdlib only.

Message (what `encode` writes; it crosses a network, so it is self-describing and never pickled)::

    b"S2RM"  u32 header_len (little-endian)  header (UTF-8 JSON)  field bytes

The header is ``{"v": 1, "fields": [[name, kind, dtype, shape], ...]}``; kind is "array" (a numpy array),
"scalar" (a bool, int or float: one element of dtype bool, int64 or float64) or "text" (a str: its UTF-8
bytes as a uint8 vector). The field bytes are the fields in header order, C-contiguous, little-endian, back
to back; their sizes follow from dtype and shape, and they must fill the message exactly. The header depends
only on names, dtypes and shapes, so a control loop sending the same layout every step reuses it.

Record (one entry of the actor's spool and of the learner's inbox; both are append-only files of records)::

    u32 magic "S2RL"  u32 crc32  u32 payload_len  u32 kind  i64 seq  payload

The CRC covers everything after itself (header tail and payload), so a record cut short by a kill or damaged
on disk is found and skipped; the scan then resumes at the next magic number whose record passes its CRC.
Bytes after the last intact record that look like the start of a record are a torn tail (a kill mid-write).
"""

from __future__ import annotations

import json
import math
import re
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

MESSAGE_MAGIC = b"S2RM"
MESSAGE_VERSION = 1
DTYPES = frozenset({"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                    "float16", "float32", "float64"})
MAX_NDIM = 8
_NAME = re.compile(r"^[^\x00-\x1f]{1,200}$")

RECORD_MAGIC = 0x4C523253  # b"S2RL" read little-endian
_RECORD = struct.Struct("<IIIIq")
RECORD_HEADER_BYTES = _RECORD.size  # 24
MAX_RECORD_PAYLOAD = 1 << 30

# Record kinds. The learner's inbox starts with one ACTOR record (JSON: actor_id, spool_id); a REFUSED record
# keeps a transition's sequence number (and why it was refused) so a refusal is final across restarts too.
KIND_ACTOR = 0
KIND_TRANSITION = 1
KIND_REFUSED = 2

Scalar = bool | int | float | str
Payload = dict[str, "np.ndarray | Scalar"]


class LinkFormatError(ValueError):
    """A message or record that does not follow the link's format."""


_DTYPE_NAMES = {**{np.dtype(n).newbyteorder("<").str: n for n in DTYPES},
                **{np.dtype(n).newbyteorder(">").str: n for n in DTYPES}}
_SCALARS = {bool: "bool", int: "int64", float: "float64"}
_PACK = {"bool": struct.Struct("<?"), "int64": struct.Struct("<q"), "float64": struct.Struct("<d")}
_HEADERS: dict[tuple, bytes] = {}  # layout -> encoded header, for the control loop's fixed layout


def encode(payload: Mapping[str, np.ndarray | Scalar]) -> bytes:
    """A dict of named arrays and scalars -> one self-describing message (see the module docstring).

    Raises:
        LinkFormatError: a name that is not a short string, an array dtype outside `DTYPES`, or a value that
            is neither an array nor a bool/int/float/str scalar.
    """
    layout, blobs = [], []
    for name, value in payload.items():
        if isinstance(value, np.ndarray):
            dt = _DTYPE_NAMES.get(value.dtype.str)
            if dt is None or value.ndim > MAX_NDIM:
                raise LinkFormatError(f"payload field '{name}' is a {value.ndim}-d {value.dtype} array; the link "
                                      f"carries up to {MAX_NDIM}-d arrays of {', '.join(sorted(DTYPES))}")
            layout.append((name, "array", dt, value.shape))
            blobs.append(value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes() if value.dtype.str[0] == ">"
                         else value.tobytes())
        elif type(value) in _SCALARS:
            dt = _SCALARS[type(value)]
            try:
                blobs.append(_PACK[dt].pack(value))
            except struct.error:
                raise LinkFormatError(f"payload field '{name}' is an int outside int64") from None
            layout.append((name, "scalar", dt, ()))
        elif isinstance(value, np.generic) and value.dtype.kind in "biuf" and value.dtype.str in _DTYPE_NAMES:
            dt = _DTYPE_NAMES[value.dtype.str]
            blobs.append(np.asarray(value).astype(np.dtype(dt).newbyteorder("<")).tobytes())
            layout.append((name, "scalar", dt, ()))
        elif isinstance(value, str):
            blobs.append(value.encode())
            layout.append((name, "text", "uint8", (len(blobs[-1]),)))
        else:
            raise LinkFormatError(f"payload field '{name}' is a {type(value).__name__}; send a numpy array or a "
                                  "bool/int/float/str scalar")
    key = tuple(layout)
    head = _HEADERS.get(key)
    if head is None:
        for name, *_ in layout:
            if not isinstance(name, str) or not _NAME.match(name):
                raise LinkFormatError(f"payload field name {name!r} is not a printable string of 1-200 characters")
        head = json.dumps({"v": MESSAGE_VERSION, "fields": [[n, k, d, list(s)] for n, k, d, s in layout]},
                          separators=(",", ":")).encode()
        if len(_HEADERS) > 256:  # layouts that keep changing (text fields): do not grow without bound
            _HEADERS.clear()
        _HEADERS[key] = head
    return b"".join([MESSAGE_MAGIC, len(head).to_bytes(4, "little"), head, *blobs])


def decode(message: bytes | memoryview) -> Payload:
    """One message -> its dict. Arrays are read-only views into `message` (copy one to change it).

    Raises:
        LinkFormatError: anything that does not follow the format, named in one sentence.
    """
    view = memoryview(message).cast("B")
    if len(view) < 8 or bytes(view[:4]) != MESSAGE_MAGIC:
        raise LinkFormatError("message is malformed: it does not start with the link's magic bytes b'S2RM'")
    hlen = int.from_bytes(view[4:8], "little")
    if hlen > len(view) - 8:
        raise LinkFormatError(f"message is malformed: its header claims {hlen} bytes but only {len(view) - 8} follow")
    try:
        head = json.loads(bytes(view[8:8 + hlen]).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LinkFormatError(f"message is malformed: its header is not UTF-8 JSON ({e})") from None
    if not isinstance(head, dict) or head.get("v") != MESSAGE_VERSION or not isinstance(head.get("fields"), list):
        raise LinkFormatError(f"message is malformed: its header is not a version-{MESSAGE_VERSION} "
                              "{'v', 'fields'} object")
    out: Payload = {}
    at = 8 + hlen
    for entry in head["fields"]:
        if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str) and _NAME.match(entry[0])
                and entry[1] in ("array", "scalar", "text") and entry[2] in DTYPES and isinstance(entry[3], list)
                and len(entry[3]) <= MAX_NDIM and all(type(s) is int and 0 <= s < 1 << 40 for s in entry[3])
                and (entry[1] != "scalar" or entry[3] == []) and (entry[1] != "text" or entry[2] == "uint8")):
            raise LinkFormatError(f"message is malformed: field entry {str(entry)[:80]} is not [name, kind, dtype, "
                                  "shape] with a known kind and dtype and non-negative sizes")
        name, kind, dtype, shape = entry[0], entry[1], np.dtype(entry[2]).newbyteorder("<"), tuple(entry[3])
        if name in out:
            raise LinkFormatError(f"message is malformed: field '{name}' appears twice")
        count = math.prod(shape)
        if count * dtype.itemsize > len(view) - at:
            raise LinkFormatError(f"message is malformed: field '{name}' {shape} {dtype.name} runs past the end "
                                  "of the message")
        value = np.frombuffer(view, dtype, count, at).reshape(shape)
        if kind == "scalar":
            out[name] = value.item()
        elif kind == "text":
            try:
                out[name] = value.tobytes().decode()
            except UnicodeDecodeError:
                raise LinkFormatError(f"message is malformed: text field '{name}' is not UTF-8") from None
        else:
            out[name] = value
        at += count * dtype.itemsize
    if at != len(view):
        raise LinkFormatError(f"message is malformed: {len(view) - at} bytes follow the last field")
    return out


def non_finite_field(payload: Mapping[str, np.ndarray | Scalar]) -> str | None:
    """The name of the first float array or float scalar holding NaN or inf, or None when all are finite."""
    for name, value in payload.items():
        if isinstance(value, np.ndarray):
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                return name
        elif isinstance(value, float) and not math.isfinite(value):
            return name
    return None


def record(kind: int, seq: int, payload: bytes) -> bytes:
    """One record's bytes (see the module docstring)."""
    tail = _RECORD.pack(RECORD_MAGIC, 0, len(payload), kind, seq)[8:]
    crc = zlib.crc32(payload, zlib.crc32(tail))
    return struct.pack("<II", RECORD_MAGIC, crc) + tail + payload


@dataclass(frozen=True)
class Record:
    """One intact record found by `scan_records`."""

    offset: int  # where it starts in the scanned bytes
    end: int  # where the next one starts
    kind: int
    seq: int
    payload: memoryview


@dataclass
class ScanResult:
    """What `scan_records` dropped, filled in as it goes."""

    end: int = 0  # byte offset just after the last intact record
    corrupt: int = 0  # runs of damaged bytes skipped between intact records
    torn: int = 0  # bytes after the last intact record


def scan_records(raw: bytes | memoryview, result: ScanResult | None = None, *, start: int = 0) -> Iterator[Record]:
    """Every intact record of `raw` from `start`, in order; damage is skipped and counted in `result`."""
    res = result if result is not None else ScanResult()
    view = memoryview(raw).cast("B")
    at = res.end = start
    magic = RECORD_MAGIC.to_bytes(4, "little")
    while at + RECORD_HEADER_BYTES <= len(view):
        m, crc, n, kind, seq = _RECORD.unpack_from(view, at)
        end = at + RECORD_HEADER_BYTES + n
        if m == RECORD_MAGIC and n <= MAX_RECORD_PAYLOAD and end <= len(view) and zlib.crc32(view[at + 8:end]) == crc:
            res.corrupt += at > res.end
            yield Record(at, end, kind, seq, view[at + RECORD_HEADER_BYTES:end])
            at = res.end = end
            continue
        at = _find(view, magic, at + 1)
        if at < 0:
            break
    res.torn = len(view) - res.end


def _find(view: memoryview, magic: bytes, at: int) -> int:
    """`find` over a large buffer without copying all of it at once."""
    step = 1 << 16
    while at < len(view):
        k = bytes(view[at:at + step + 3]).find(magic)
        if k >= 0:
            return at + k
        at += step
    return -1


# The gRPC service, spoken with generic handlers over raw bytes (no generated code): each request and reply is
# one `encode`d message. Upload: {actor_id, spool_id, seqs int64 (n,), sizes int64 (n,), blob uint8} ->
# {high, stored, duplicates, refused}. Weights (server streaming): {actor_id, have} -> chunks of the newest
# version above `have`: {version, index, count, total, crc, metadata (JSON, first chunk), data uint8}.
SERVICE = "s2r.hil.Link"
UPLOAD_METHOD = f"/{SERVICE}/Upload"
WEIGHTS_METHOD = f"/{SERVICE}/Weights"
TOKEN_METADATA_KEY = "s2r-token"
ACTOR_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_actor_id(actor_id: str) -> str:
    """`actor_id` if it can name a file on every OS, else a LinkFormatError that says what fits."""
    if not isinstance(actor_id, str) or not ACTOR_ID.match(actor_id):
        raise LinkFormatError(f"actor_id {actor_id!r} must be 1-64 letters, digits, '_', '.' or '-' starting with a "
                              "letter or digit (it names the learner's inbox file)")
    return actor_id
