"""The operator's web console for a human-in-the-loop run: live camera, episode statistics and the device's buttons.

The actor serves one page (stdlib `http.server`, nothing fetched at run time, bound to 127.0.0.1 by default):

    console = OperatorConsole(bind="127.0.0.1:0")
    port = console.start()                  # open http://127.0.0.1:<port>/ in a browser
    console.publish_frame(rgb)              # (H, W, 3) uint8, every control step or slower
    console.publish_stats({"episode": 12, "success_rate": 0.4, "intervention_rate": 0.2})
    cmd = console.read()                    # a ConsoleCommand, i.e. a TeleopCommand: one more teleop source

Buttons (what the device's buttons do): success, failure, reset (each ends the episode once), intervene (toggles
the takeover), pause (toggles `paused`), labelling (toggles the labelling mode of `s2r hil label`) and, in that
mode, a hold-to-label "success" button (`label` is True while it is held).

Several browsers may press at once. Every press is one event with a client-chosen id (a page sends its presses one
at a time, so they arrive in click order); the server numbers events
in arrival order under one lock, ignores a repeated id (a retried request is applied once), and `read()` applies
them in that order: toggles all at once, but at most one episode-ending press (success/failure/reset) per read,
so two operators pressing "success" and "failure" in the same step give two consecutive episode ends in arrival
order instead of one episode labelled both ways. A press needs the `X-S2R-Console` header, which a page from
another origin cannot send without a CORS preflight that this server never grants. Bound beyond loopback, the
console needs a token (opened once as /?token=..., then kept in a same-site cookie).

Frames are encoded when a browser asks (JPEG through OpenCV when it is installed, else PNG with zlib), so the
control loop only copies the array. The page shows how old the newest frame is and says when the camera stopped.
No torch, no simulator: numpy + the standard library.
"""

from __future__ import annotations

import hmac
import json
import struct
import threading
import time
import zlib
from collections import OrderedDict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
from s2r.real.hil_console_page import PAGE
from s2r.real.intervention import OperatorInput
from s2r.real.teleop import TeleopCommand

EPISODE_BUTTONS = ("success", "failure", "reset")
TOGGLE_BUTTONS = ("intervene", "pause", "labelling")
HOLD_BUTTONS = ("label_down", "label_up")
BUTTONS = EPISODE_BUTTONS + TOGGLE_BUTTONS + HOLD_BUTTONS
HISTORY = 500  # points kept for the rate chart
SEEN_IDS = 4096  # press ids remembered for de-duplication


class ConsoleError(ValueError):
    """Bad input to the console (a frame, an address); the message names it and the fix."""


@dataclass(frozen=True, kw_only=True)
class ConsoleCommand(TeleopCommand):
    """A `TeleopCommand` plus the console's own switches.

    Attributes:
        paused: The operator paused the run (the actor should hold the arm and stop stepping).
        labelling: The labelling mode is on.
        label: The hold-to-label success button is down (labelling mode), or was pressed since the last read.
        presses: Events applied by this read, in order (for logs and tests).
    """

    paused: bool = False
    labelling: bool = False
    label: bool = False
    presses: tuple[str, ...] = ()


def merge_commands(device: TeleopCommand, console: ConsoleCommand) -> TeleopCommand:
    """A device and the console together: the device steers, either may take over or press an episode button."""
    return TeleopCommand(action=device.action, intervene=device.intervene or console.intervene,
                         success=device.success or console.success, failure=device.failure or console.failure,
                         reset=device.reset or console.reset, connected=device.connected)


def with_console(op: OperatorInput, cmd: ConsoleCommand) -> OperatorInput:
    """The console's buttons on top of another operator's input (a device, or the simulated operator).

    Either may take over (the other operator's action is executed: the console does not steer) and either's
    success/failure/reset counts; applied to every env of `op`.
    """
    n = len(op.intervene)
    on = lambda v: np.full(n, bool(v))  # noqa: E731
    return OperatorInput(action=op.action, intervene=op.intervene | on(cmd.intervene), connected=op.connected,
                         success=op.success | on(cmd.success), failure=op.failure | on(cmd.failure),
                         reset=op.reset | on(cmd.reset))


class EpisodeRates:
    """Success and intervention rates over the last `window` episodes, as `publish_stats` takes them."""

    def __init__(self, window: int = 20) -> None:
        self.window = window
        self.episodes = 0
        self._recent: deque[tuple[bool, float]] = deque(maxlen=window)
        self._steps = self._intervened = 0

    def step(self, intervened: bool) -> None:
        self._steps += 1
        self._intervened += int(intervened)

    def end_episode(self, success: bool) -> dict[str, float]:
        """Close an episode; returns the stats to publish."""
        self._recent.append((bool(success), self._intervened / max(1, self._steps)))
        self.episodes += 1
        self._steps = self._intervened = 0
        return self.stats()

    def stats(self) -> dict[str, float]:
        rec = list(self._recent)
        return {"episode": self.episodes,
                "success_rate": float(np.mean([s for s, _ in rec])) if rec else 0.0,
                "intervention_rate": float(np.mean([i for _, i in rec])) if rec else 0.0}


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 image with the standard library only (filter 0, zlib level 1)."""
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))


def _encoder(encoding: str) -> tuple[str, Any]:
    if encoding in ("auto", "jpeg"):
        try:
            import cv2

            def jpeg(rgb: np.ndarray) -> bytes:
                _, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 85])
                return buf.tobytes()

            return "image/jpeg", jpeg
        except ImportError:
            if encoding == "jpeg":
                raise ConsoleError("console encoding 'jpeg' needs OpenCV (pip install opencv-python-headless); "
                                   "use encoding='png' or 'auto'") from None
    if encoding not in ("auto", "png", "jpeg"):
        raise ConsoleError(f"console encoding must be 'auto', 'jpeg' or 'png', got {encoding!r}")
    return "image/png", encode_png


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume it resolves beyond this machine


def parse_bind(bind: str) -> tuple[str, int]:
    """'host:port' -> (host, port), with one sentence on a bad address."""
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConsoleError(f"console bind address {bind!r} must read host:port, e.g. 127.0.0.1:8080 (port 0: any free)")
    return host, int(port)


class OperatorConsole:
    """The console's state, shared by the actor's loop and the HTTP server threads (one lock)."""

    def __init__(self, bind: str = "127.0.0.1:0", *, encoding: str = "auto", action_dim: int = 4,
                 title: str = "s2r operator console", stale_after_s: float = 1.0, token: str | None = None) -> None:
        self.host, self.port = parse_bind(bind)
        if not _is_loopback(self.host) and not token:
            raise ConsoleError(f"console bind address {self.host} is reachable from other computers and its buttons move "
                               "the robot; set a token (e.g. $S2R_CONSOLE_TOKEN) and open the page as /?token=<token>, "
                               "or bind 127.0.0.1 and use an ssh tunnel")
        self.token = token or None
        self.content_type, self._encode = _encoder(encoding)
        self.action_dim = action_dim
        self.title = title
        self.stale_after_s = stale_after_s
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._frame_seq = 0
        self._frame_t = 0.0  # wall clock of the newest frame (time.time, so a browser on this machine compares)
        self._encoded: tuple[int, bytes] | None = None
        self._stats: dict[str, Any] = {}
        self._history: deque[dict[str, float]] = deque(maxlen=HISTORY)
        self._events: deque[tuple[int, str]] = deque()
        self._event_seq = 0
        self._seen: OrderedDict[str, int] = OrderedDict()
        self.intervene = self.paused = self.labelling = self.label = False
        self.applied = 0  # events applied by read()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- actor side -------------------------------------------------------------------------------------------

    def start(self) -> int:
        """Serve the page on a background thread; returns the port (useful with port 0)."""
        console = self

        class Handler(_Handler):
            pass

        Handler.console = console
        try:
            self._server = _Server((self.host, self.port), Handler)
        except OSError as exc:
            raise ConsoleError(f"console cannot listen on {self.host}:{self.port} ({exc.strerror}); pick another "
                               "port or 0 for any free one") from None
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="hil-console", daemon=True)
        self._thread.start()
        return self.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._cond:
            self._cond.notify_all()

    def __enter__(self) -> OperatorConsole:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def publish_frame(self, rgb: np.ndarray) -> int:
        """Show `rgb` ((H, W, 3) uint8) in every open page; returns the frame's sequence number."""
        img = np.asarray(rgb)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ConsoleError(f"console frame must be an (H, W, 3) uint8 RGB array, got shape {img.shape} dtype "
                               f"{img.dtype}; decode compressed images and convert BGR/BGRA/float to RGB uint8 first")
        with self._cond:
            self._frame = img.copy()
            self._frame_seq += 1
            self._frame_t = time.time()
            self._cond.notify_all()
            return self._frame_seq

    def publish_stats(self, stats: dict[str, Any]) -> None:
        """Numbers to show (any JSON values); a new `episode` value adds a point to the rate chart."""
        clean = {str(k): (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in stats.items()}
        with self._cond:
            new_episode = "episode" in clean and clean["episode"] != self._stats.get("episode")
            self._stats = clean
            if new_episode:
                self._history.append({k: clean[k] for k in ("episode", "success_rate", "intervention_rate")
                                      if isinstance(clean.get(k), (int, float))})
            self._cond.notify_all()

    def read(self) -> ConsoleCommand:
        """Apply the presses since the last read, in arrival order (at most one episode end per read)."""
        applied: list[str] = []
        end = {b: False for b in EPISODE_BUTTONS}
        with self._cond:
            tapped = False  # a hold shorter than one control step still labels this step's frame
            while self._events:
                _, button = self._events[0]
                if button in EPISODE_BUTTONS:
                    if any(end.values()):
                        break  # the next episode end waits for the next read
                    end[button] = True
                elif button == "intervene":
                    self.intervene = not self.intervene
                elif button == "pause":
                    self.paused = not self.paused
                elif button == "labelling":
                    self.labelling = not self.labelling
                    self.label = False
                else:
                    self.label = button == "label_down" and self.labelling
                    tapped |= self.label
                self._events.popleft()
                applied.append(button)
            self.applied += len(applied)
            self._cond.notify_all()
            action = np.zeros(self.action_dim, dtype=np.float32)
            if self.action_dim:
                action[-1] = -1.0  # gripper open: the console does not steer
            return ConsoleCommand(action=action, intervene=self.intervene, connected=True, paused=self.paused,
                                  labelling=self.labelling, label=self.label or tapped, presses=tuple(applied), **end)

    # -- server side ------------------------------------------------------------------------------------------

    def press(self, button: str, press_id: str) -> tuple[int, bool]:
        """Queue one press; returns (event number, whether it was new). A repeated id is not queued again."""
        if button not in BUTTONS:
            raise ConsoleError(f"unknown console button {button!r}; buttons are {', '.join(BUTTONS)}")
        with self._cond:
            if press_id in self._seen:
                return self._seen[press_id], False
            self._event_seq += 1
            self._events.append((self._event_seq, button))
            self._seen[press_id] = self._event_seq
            while len(self._seen) > SEEN_IDS:
                self._seen.popitem(last=False)
            self._cond.notify_all()
            return self._event_seq, True

    def state(self, after_frame: int = -1, wait_s: float = 0.0) -> dict[str, Any]:
        """What the page shows; with `wait_s`, waits (long poll) for a frame newer than `after_frame`."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            while self._frame_seq <= after_frame and self._server is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            age = time.time() - self._frame_t if self._frame_seq else None
            return {"title": self.title, "frame_seq": self._frame_seq, "frame_time": self._frame_t,
                    "frame_age_s": age, "camera_stalled": age is None or age > self.stale_after_s,
                    "stats": self._stats, "history": list(self._history), "intervene": self.intervene,
                    "paused": self.paused, "labelling": self.labelling, "label": self.label,
                    "events_queued": len(self._events), "events_applied": self.applied,
                    "events_received": self._event_seq}

    def frame_bytes(self) -> tuple[int, float, bytes] | None:
        """(seq, wall time, encoded bytes) of the newest frame, encoded once per frame; None before the first."""
        with self._cond:
            if self._frame is None:
                return None
            seq, t, frame = self._frame_seq, self._frame_t, self._frame
            if self._encoded is not None and self._encoded[0] == seq:
                return seq, t, self._encoded[1]
        data = self._encode(frame)  # outside the lock: the control loop never waits on an encoder
        with self._cond:
            if self._encoded is None or self._encoded[0] < seq:
                self._encoded = (seq, data)
        return seq, t, data


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a closed tab mid-request is normal
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    console: OperatorConsole
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the second waits for the browser's delayed ACK (~40 ms).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a request log per frame would drown the actor's own output

    def _send(self, code: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, obj: Any) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json")

    def _authorised(self, q: dict[str, list[str]]) -> bool:
        """With a token: the page URL carries it once (?token=), then a same-site cookie does."""
        token = self.console.token
        if token is None:
            return True
        cookies = dict(part.strip().split("=", 1) for part in self.headers.get("Cookie", "").split(";") if "=" in part)
        if hmac.compare_digest(q.get("token", [""])[0], token) or hmac.compare_digest(cookies.get("s2r_console", ""), token):
            return True
        self._json(401, {"error": "this console needs its token: open /?token=<token> (the actor's $S2R_CONSOLE_TOKEN)"})
        return False

    def do_GET(self) -> None:
        url = urlparse(self.path)
        q = parse_qs(url.query)
        c = self.console
        if not self._authorised(q):
            return
        if url.path == "/":
            cookie = {"Set-Cookie": f"s2r_console={c.token}; HttpOnly; SameSite=Strict; Path=/"} if c.token else {}
            self._send(200, PAGE.replace("__TITLE__", c.title).encode(), "text/html; charset=utf-8", cookie)
        elif url.path == "/state":
            try:
                after = int(q.get("after", ["-1"])[0])
                wait = min(max(float(q.get("wait", ["0"])[0]), 0.0), 5.0)
            except ValueError:
                self._json(400, {"error": "state query 'after' must be an integer and 'wait' a number of seconds"})
                return
            self._json(200, c.state(after, wait))
        elif url.path == "/frame":
            got = c.frame_bytes()
            if got is None:
                self._json(404, {"error": "no camera frame published yet"})
                return
            seq, t, data = got
            self._send(200, data, c.content_type, {"X-Frame-Seq": str(seq), "X-Frame-Time": f"{t:.6f}"})
        else:
            self._json(404, {"error": f"no page {url.path}; the console serves /, /state, /frame and POST /press"})

    def do_POST(self) -> None:
        if urlparse(self.path).path != "/press":
            self._json(404, {"error": "POST only to /press"})
            return
        if not self._authorised({}):
            return
        if self.headers.get("X-S2R-Console") != "1":
            self._json(403, {"error": "a press needs the header X-S2R-Console: 1 (the console page sends it)"})
            return
        try:
            n = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(min(n, 4096)) or b"{}")
            button, press_id = str(body["button"]), str(body["id"])
        except (ValueError, KeyError, TypeError):
            self._json(400, {"error": 'a press is a JSON body {"button": ..., "id": ...}'})
            return
        try:
            seq, new = self.console.press(button, press_id)
        except ConsoleError as exc:
            self._json(400, {"error": str(exc)})
            return
        self._json(200, {"seq": seq, "new": new})
