"""A PNG strip of a few frames of an `s2r play --video` MP4 (the MP4 itself is git-ignored).

    MUJOCO_GL=egl s2r play <run> --video /tmp/play.mp4 --seconds 10 --seed 3   # prints success_steps
    python bench/video_strip.py /tmp/play.mp4 --first 0 --last 24 --count 6 --out bench/results/<name>.png

Frame k shows the state after control step k (20 per second on the manipulation tasks); `s2r play` resets an
episode inside the step that ends it, so for a success at step k the last frame of that episode is k - 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def pick(first: int, last: int, count: int) -> list[int]:
    """`count` frame indices spread evenly from `first` to `last`, both included."""
    if not 0 <= first <= last or count < 1:
        raise ValueError(f"need 0 <= --first ({first}) <= --last ({last}) and --count >= 1 ({count})")
    return sorted({int(np.rint(x)) for x in np.linspace(first, last, count)})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("video", help="an .mp4 written by `s2r play --video`")
    p.add_argument("--first", type=int, default=0, help="first frame of the strip")
    p.add_argument("--last", type=int, required=True, help="last frame of the strip")
    p.add_argument("--count", type=int, default=6)
    p.add_argument("--title", default="")
    p.add_argument("--out", required=True, help="output .png")
    args = p.parse_args()

    import imageio.v2 as imageio
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = imageio.mimread(args.video, memtest=False)
    if args.last >= len(frames):
        p.error(f"--last {args.last} is past the video's last frame ({len(frames) - 1}) in {args.video}")
    ids = pick(args.first, args.last, args.count)
    fig, axes = plt.subplots(1, len(ids), figsize=(2.6 * len(ids), 2.3))
    for ax, k in zip(np.atleast_1d(axes), ids, strict=True):
        ax.imshow(frames[k])
        ax.set_title(f"step {k} ({k * 0.05:.2f} s)", fontsize=8)
        ax.axis("off")
    if args.title:
        fig.suptitle(args.title, fontsize=9)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    print(f"{out}: frames {ids} of {len(frames)}")


if __name__ == "__main__":
    main()
