"""Operator console: page load time and camera-frame-to-browser latency, measured in a real headless Chromium.

    python bench/hil_console.py                          # 128x128 frames at 20 Hz for 15 s, JPEG
    python bench/hil_console.py --size 84 --rate 30 --encoding png

Page load: a fresh tab navigates to the console; seconds from the request to the page's load event, `--loads`
times. Latency: this process publishes frames at `--rate` (as the actor's loop would) and records the wall clock
of each publish; the page records the wall clock (`performance.timeOrigin + now()`) when each frame finished
loading into its <img>. Browser and console run on this machine, so both clocks are the same clock. Frames
the page skipped (a newer one was ready by the time it asked) count as skipped, not as latency.
Writes bench/results/hil_console.json (command line, git commit, load average, wall time) and a histogram PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128, help="square frame size in pixels (default 128)")
    p.add_argument("--rate", type=float, default=20.0, help="frames per second published (default 20)")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--loads", type=int, default=10, help="page loads to time (default 10)")
    p.add_argument("--encoding", default="auto", choices=["auto", "jpeg", "png"])
    p.add_argument("--out", default=str(REPO / "bench/results/hil_console.json"))
    args = p.parse_args()

    from s2r.real.hil_console import OperatorConsole

    from tests.real.browser import Chromium, find_chromium

    if find_chromium() is None:
        print("bench/hil_console.py needs Chromium: apt-get install -y chromium", file=sys.stderr)
        return 2
    load0, t_start = os.getloadavg(), time.monotonic()
    rng = np.random.default_rng(0)
    # A camera-like frame: smooth gradient + noise (JPEG size close to a rendered scene's, unlike a flat colour).
    yy, xx = np.mgrid[0:args.size, 0:args.size]
    base = np.stack([xx * 255 // args.size, yy * 255 // args.size, (xx + yy) * 127 // args.size], -1).astype(np.int16)
    published: dict[int, float] = {}
    with OperatorConsole(encoding=args.encoding) as console, Chromium() as browser:
        loads = []
        for _ in range(args.loads):
            page = browser.new_page()
            loads.append(page.navigate(console.url))
            page.close()
        page = browser.new_page()
        page.navigate(console.url)
        period = 1.0 / args.rate
        next_t = time.monotonic()
        end = next_t + args.seconds
        sizes = []
        while time.monotonic() < end:
            frame = np.clip(base + rng.integers(-12, 12, base.shape), 0, 255).astype(np.uint8)
            seq = console.publish_frame(frame)
            published[seq] = time.time()
            if seq % 50 == 1:
                sizes.append(len(console.frame_bytes()[2]))
            console.publish_stats({"episode": seq // 40, "success_rate": 0.5, "intervention_rate": 0.2})
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))
        time.sleep(0.5)
        shown = page.evaluate("window.s2r.frames")
        page.close()
    lat = np.array([t_ms / 1000.0 - published[int(seq)] for seq, t_ms in shown if int(seq) in published]) * 1000.0
    result = {
        "command": " ".join([sys.executable, *sys.argv]),
        "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip(),
        "load_avg_before": load0, "load_avg_after": os.getloadavg(), "wall_s": round(time.monotonic() - t_start, 1),
        "machine": f"{os.cpu_count()} CPUs, shared with other jobs (see load average); Chromium headless, same machine",
        "frame": {"size": args.size, "rate_hz": args.rate, "encoding": console.content_type,
                  "bytes_mean": float(np.mean(sizes)) if sizes else None},
        "page_load_s": {"p50": float(np.percentile(loads, 50)), "max": float(np.max(loads)), "n": len(loads)},
        "frame_latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                             "max": float(lat.max()), "n": int(lat.size)},
        "frames_published": len(published), "frames_shown": len(shown),
        "frames_skipped_fraction": 1.0 - len(shown) / max(1, len(published)),
        "notes": "latency = browser wall clock when the <img> finished loading minus the wall clock at publish_frame; "
                 "includes the long-poll wake-up, the HTTP fetch, JPEG/PNG encoding and decoding in the browser.",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3))
        ax.hist(lat, bins=40)
        ax.set_xlabel("camera frame to browser (ms)")
        ax.set_ylabel("frames")
        ax.set_title(f"console latency, {args.size}px @ {args.rate:g} Hz: p50 {result['frame_latency_ms']['p50']:.1f} ms, "
                     f"p99 {result['frame_latency_ms']['p99']:.1f} ms", fontsize=9)
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"), dpi=100)
    except ImportError:
        pass
    print(json.dumps({k: result[k] for k in ("page_load_s", "frame_latency_ms", "frames_skipped_fraction")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
