"""The operator console: concurrent presses, bad input, and the page in a real headless Chromium."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from s2r.real.hil_console import ConsoleError, EpisodeRates, OperatorConsole, encode_png, merge_commands, with_console
from s2r.real.intervention import OperatorInput
from s2r.real.teleop import TeleopCommand

from tests.real.browser import Chromium, find_chromium


def _post(url: str, body: dict, header: bool = True) -> tuple[int, dict]:
    req = urllib.request.Request(url + "press", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **({"X-S2R-Console": "1"} if header else {})})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def console():
    with OperatorConsole(bind="127.0.0.1:0") as c:
        yield c


def test_two_clients_pressing_at_once_each_press_applied_once_in_order(console: OperatorConsole) -> None:
    pattern = ["success", "intervene", "failure", "pause", "reset", "intervene", "pause"]
    n = 40
    sent: dict[str, list[tuple[int, str]]] = {"a": [], "b": []}

    def client(name: str) -> None:
        for i in range(n):
            button = pattern[i % len(pattern)]
            status, body = _post(console.url, {"button": button, "id": f"{name}-{i}"})
            assert status == 200 and body["new"]
            sent[name].append((body["seq"], button))
            if i % 5 == 0:  # a retried request (same id) must not be applied twice
                status, again = _post(console.url, {"button": button, "id": f"{name}-{i}"})
                assert status == 200 and not again["new"] and again["seq"] == body["seq"]

    threads = [threading.Thread(target=client, args=(k,)) for k in sent]
    for t in threads:
        t.start()
    applied: list[str] = []
    ends_per_read: list[int] = []
    while any(t.is_alive() for t in threads) or console.state()["events_queued"]:
        cmd = console.read()
        applied.extend(cmd.presses)
        ends_per_read.append(int(cmd.success) + int(cmd.failure) + int(cmd.reset))
        assert sum(p in ("success", "failure", "reset") for p in cmd.presses) == ends_per_read[-1]
        time.sleep(0.001)
    for t in threads:
        t.join()
    applied.extend(console.read().presses)
    expected = [button for _, button in sorted(sent["a"] + sent["b"])]  # server order = event numbers
    assert applied == expected
    assert len(applied) == 2 * n and max(ends_per_read) <= 1
    toggles = sum(b == "intervene" for b in expected)
    assert console.intervene == bool(toggles % 2)
    assert console.paused == bool(sum(b == "pause" for b in expected) % 2)


def test_episode_ends_pressed_together_end_two_episodes(console: OperatorConsole) -> None:
    console.press("success", "x1")
    console.press("failure", "x2")
    console.press("intervene", "x3")
    first, second, third = console.read(), console.read(), console.read()
    assert first.success and not first.failure and not first.intervene
    assert second.failure and not second.success and second.intervene  # the toggle rides with the second read
    assert not (third.success or third.failure or third.reset) and third.intervene


def test_console_is_a_teleop_source(console: OperatorConsole) -> None:
    console.press("intervene", "i1")
    cmd = console.read()
    op = OperatorInput.from_command(cmd)
    assert op.intervene[0] and op.connected[0] and op.action.shape == (1, 4)
    device = TeleopCommand(action=np.array([0.5, 0, 0, 1.0]), intervene=False)
    merged = merge_commands(device, cmd)
    assert merged.intervene and merged.action[0] == 0.5 and not merged.success
    console.press("failure", "f1")
    sim_op = OperatorInput.idle(3, 4)  # e.g. the simulated operator's input for 3 envs
    both = with_console(sim_op, console.read())
    assert both.failure.all() and both.intervene.all() and not both.success.any()
    rates = EpisodeRates(window=2)
    for s in (True, False, True):
        rates.step(True)
        rates.step(False)
        stats = rates.end_episode(s)
    assert stats == {"episode": 3, "success_rate": 0.5, "intervention_rate": 0.5}


def test_labelling_hold_button(console: OperatorConsole) -> None:
    console.press("label_down", "l0")  # outside labelling mode a hold does nothing
    assert not console.read().label
    console.press("labelling", "l1")
    console.press("label_down", "l2")
    held = console.read()
    assert held.labelling and held.label
    console.press("label_up", "l3")
    assert not console.read().label
    console.press("label_down", "l4")  # a tap shorter than a control step labels that step's frame
    console.press("label_up", "l5")
    assert console.read().label and not console.read().label


def test_bad_input_is_one_sentence(console: OperatorConsole) -> None:
    with pytest.raises(ConsoleError, match=r"\(H, W, 3\) uint8 RGB"):
        console.publish_frame(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ConsoleError, match="BGRA"):
        console.publish_frame(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ConsoleError, match="decode compressed"):
        console.publish_frame(np.frombuffer(b"\xff\xd8\xff\xe0jpegbytes", np.uint8))
    with pytest.raises(ConsoleError, match="host:port"):
        OperatorConsole(bind="localhost")
    with pytest.raises(ConsoleError, match="encoding"):
        OperatorConsole(encoding="gif")
    status, body = _post(console.url, {"button": "launch", "id": "z"})
    assert status == 400 and "unknown console button" in body["error"]
    status, body = _post(console.url, {"button": "success", "id": "z"}, header=False)
    assert status == 403 and "X-S2R-Console" in body["error"]
    assert console.state()["events_received"] == 0


def test_beyond_loopback_needs_a_token() -> None:
    with pytest.raises(ConsoleError, match="set a token"):
        OperatorConsole(bind="0.0.0.0:0")
    # Loopback with a token: exercises the same check on one machine.
    with OperatorConsole(bind="127.0.0.1:0", token="s3cret") as c:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(c.url + "state", timeout=5)
        assert err.value.code == 401
        status, _ = _post(c.url, {"button": "success", "id": "t"})
        assert status == 401 and c.state()["events_received"] == 0
        with urllib.request.urlopen(c.url + "?token=s3cret", timeout=5) as r:
            cookie = r.headers["Set-Cookie"].split(";")[0]
        req = urllib.request.Request(c.url + "press", data=b'{"button": "success", "id": "t"}', method="POST",
                                     headers={"X-S2R-Console": "1", "Cookie": cookie})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200
        assert c.read().success


def test_png_encoder_round_trips_and_a_stopped_camera_is_reported() -> None:
    cv2 = pytest.importorskip("cv2")
    rgb = np.random.default_rng(0).integers(0, 255, (17, 23, 3), dtype=np.uint8)
    back = cv2.imdecode(np.frombuffer(encode_png(rgb), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(back, rgb)
    with OperatorConsole(encoding="png", stale_after_s=0.2) as c:
        assert c.state()["camera_stalled"]
        c.publish_frame(rgb)
        assert not c.state()["camera_stalled"]
        time.sleep(0.3)
        assert c.state()["camera_stalled"]
        with urllib.request.urlopen(c.url + "frame", timeout=5) as r:
            assert r.headers["Content-Type"] == "image/png" and r.headers["X-Frame-Seq"] == "1"


PIXEL_JS = """(() => {const i = document.getElementById('camera'); const cv = document.createElement('canvas');
cv.width = i.naturalWidth; cv.height = i.naturalHeight; const x = cv.getContext('2d'); x.drawImage(i, 0, 0);
return Array.from(x.getImageData(cv.width / 2, cv.height / 2, 1, 1).data).slice(0, 3);})()"""


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (apt-get install -y chromium); "
                    "the console's browser test needs a real headless browser")
def test_page_in_headless_chromium_shows_frames_and_presses_reach_the_actor() -> None:
    pytest.importorskip("websockets", reason="the DevTools client needs websockets (in the dev extra)")
    with OperatorConsole(bind="127.0.0.1:0", stale_after_s=0.5) as c, Chromium() as browser:
        c.publish_frame(np.full((48, 64, 3), (220, 20, 20), np.uint8))
        c.publish_stats({"episode": 1, "success_rate": 0.0, "intervention_rate": 1.0})
        page = browser.new_page()
        page.navigate(c.url)
        assert page.evaluate("document.title") == "s2r operator console"
        page.wait_for("window.s2r.shown >= 1")
        red = page.evaluate(PIXEL_JS)
        c.publish_frame(np.full((48, 64, 3), (20, 220, 20), np.uint8))
        page.wait_for("window.s2r.shown >= 2")
        green = page.evaluate(PIXEL_JS)
        assert red[0] > 150 > red[1] and green[1] > 150 > green[0], (red, green)  # the pixels the browser drew
        assert page.evaluate("document.getElementById('frame-seq').textContent") == "2"
        for ep in range(2, 6):
            c.publish_stats({"episode": ep, "success_rate": ep / 10, "intervention_rate": 1 - ep / 10})
        c.publish_frame(np.zeros((48, 64, 3), np.uint8))
        page.wait_for("window.s2r.shown >= 3")
        points = page.evaluate("document.querySelector('#chart polyline').getAttribute('points')")
        assert len(points.split()) == 5

        page.evaluate("document.getElementById('b-success').click()")
        page.evaluate("document.getElementById('b-intervene').click()")
        deadline = time.monotonic() + 5
        presses: list[str] = []
        while len(presses) < 2 and time.monotonic() < deadline:
            presses.extend(c.read().presses)
            time.sleep(0.02)
        assert presses == ["success", "intervene"] and c.intervene
        page.wait_for("document.getElementById('b-intervene').classList.contains('on')")
        # A keyboard press in the page is a button press too.
        page.call("Input.dispatchKeyEvent", {"type": "keyDown", "key": "n", "text": "n"})
        page.call("Input.dispatchKeyEvent", {"type": "keyUp", "key": "n"})
        deadline = time.monotonic() + 5
        while not c.state()["events_queued"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.read().failure
        page.wait_for("document.getElementById('stalled').textContent === 'camera stopped'", timeout_s=5)
        # Labelling mode: the hold button appears; holding it labels frames until it is released.
        page.evaluate("document.getElementById('b-labelling').click()")
        deadline = time.monotonic() + 5
        while not c.labelling and time.monotonic() < deadline:
            c.read()
            time.sleep(0.02)
        page.wait_for("getComputedStyle(document.getElementById('b-label')).display !== 'none'")
        page.evaluate("document.getElementById('b-label').dispatchEvent(new PointerEvent('pointerdown'))")
        page.wait_for("window.s2r.sent >= 5")
        deadline = time.monotonic() + 5
        while not c.read().label and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.label
        page.evaluate("document.getElementById('b-label').dispatchEvent(new PointerEvent('pointerup'))")
        deadline = time.monotonic() + 5
        while c.read().label and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not c.label

        # Two browsers pressing at once: every press is applied exactly once.
        other = browser.new_page()
        other.navigate(c.url)
        before = c.state()["events_received"]
        page.evaluate("for (let i = 0; i < 20; i++) press('pause')")
        other.evaluate("for (let i = 0; i < 20; i++) press('reset')")
        page.wait_for("window.s2r.chain.then(() => true)")
        other.wait_for("window.s2r.chain.then(() => true)")
        assert c.state()["events_received"] == before + 40
        got: list[str] = []
        while c.state()["events_queued"]:
            got.extend(c.read().presses)
        assert got.count("pause") == 20 and got.count("reset") == 20 and not c.paused
        other.close()
        page.close()
