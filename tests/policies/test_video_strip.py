"""bench/video_strip.py: a PNG strip of an MP4's frames; frames picked evenly, bad ranges refused in one sentence."""

from __future__ import annotations

import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest

from tests.bench_modules import REPO, load_bench


def test_pick_spreads_frames_and_refuses_a_bad_range() -> None:
    pick = load_bench("video_strip").pick
    assert pick(0, 22, 6) == [0, 4, 9, 13, 18, 22]
    assert pick(5, 5, 6) == [5]
    with pytest.raises(ValueError, match=r"--first \(9\) <= --last \(3\)"):
        pick(9, 3, 6)


def test_strip_of_a_real_mp4(tmp_path) -> None:
    video = tmp_path / "v.mp4"
    frames = [np.full((48, 64, 3), 20 * k, dtype=np.uint8) for k in range(8)]
    # CI once saw ffmpeg's writer pipe break (empty stderr) on a loaded box: one encoder thread, and one retry,
    # because what is tested here is reading the video, not writing it.
    for attempt in range(2):
        try:
            imageio.mimsave(str(video), frames, fps=20, macro_block_size=1, ffmpeg_params=["-threads", "1"])
            break
        except OSError:
            if attempt:
                raise
    out = tmp_path / "s.png"
    cmd = [sys.executable, str(REPO / "bench" / "video_strip.py"), str(video), "--last", "7", "--count", "3", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "frames [0, 4, 7] of 8" in res.stdout and imageio.imread(out).shape[0] > 100
    bad = subprocess.run([*cmd[:3], "--last", "8", "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "--last 8 is past the video's last frame (7)" in bad.stderr
