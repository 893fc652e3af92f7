"""Small report figures drawn with OpenCV, so calibration needs no plotting library.

A figure is a grid of panels; each panel is a line/scatter plot with axes, ticks, a title and a legend.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

# BGR colours that stay apart for the usual colour-blind palettes.
COLORS = ((180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140),
          (194, 119, 227), (127, 127, 127))
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class Series:
    """One line or point cloud."""

    label: str
    x: np.ndarray
    y: np.ndarray
    color: tuple[int, int, int] = COLORS[0]
    points: bool = False
    thickness: int = 1


@dataclass
class Panel:
    """One plot."""

    title: str
    xlabel: str = ""
    ylabel: str = ""
    series: list[Series] = field(default_factory=list)
    equal_axes: bool = False
    circles: tuple[float, ...] = ()  # reference circles around the origin (e.g. 0.3 px)

    def add(self, label: str, x: np.ndarray, y: np.ndarray, *, color: int | tuple[int, int, int] | None = None,
            points: bool = False, thickness: int = 1) -> Panel:
        """Append a series; `color` is a palette index or a BGR tuple (default: next in the palette)."""
        if color is None:
            color = len(self.series)
        if isinstance(color, int):
            color = COLORS[color % len(COLORS)]
        self.series.append(Series(label, np.asarray(x, float), np.asarray(y, float), color, points, thickness))
        return self


def _nice_ticks(lo: float, hi: float, n: int = 5) -> np.ndarray:
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.array([lo])
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=10 * mag)
    return np.arange(math.ceil(lo / step) * step, hi + step * 1e-9, step)


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


def draw_panel(p: Panel, w: int = 640, h: int = 360) -> np.ndarray:
    """Render one panel as a BGR image."""
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 62, 12, 28, 40
    pw, ph = w - left - right, h - top - bottom
    xs = [s.x[np.isfinite(s.x)] for s in p.series if s.x.size]
    ys = [s.y[np.isfinite(s.y)] for s in p.series if s.y.size]
    xs = np.concatenate(xs) if xs else np.array([0.0, 1.0])
    ys = np.concatenate(ys) if ys else np.array([0.0, 1.0])
    if p.circles:
        r = max(p.circles)
        xs, ys = np.append(xs, [-r, r]), np.append(ys, [-r, r])
    x0, x1 = (float(xs.min()), float(xs.max())) if xs.size else (0.0, 1.0)
    y0, y1 = (float(ys.min()), float(ys.max())) if ys.size else (0.0, 1.0)
    if x1 - x0 < 1e-12:
        x0, x1 = x0 - 1, x1 + 1
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 1, y1 + 1
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad
    if any(s.points for s in p.series):  # markers at the extremes stay inside the frame
        pad = 0.03 * (x1 - x0)
        x0, x1 = x0 - pad, x1 + pad
    if p.equal_axes:
        # Same units per pixel on both axes, so circles stay round.
        scale = max((x1 - x0) / pw, (y1 - y0) / ph)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        x0, x1 = cx - scale * pw / 2, cx + scale * pw / 2
        y0, y1 = cy - scale * ph / 2, cy + scale * ph / 2

    def to_px(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u = left + (x - x0) / (x1 - x0) * pw
        v = top + ph - (y - y0) / (y1 - y0) * ph
        return np.stack([u, v], axis=-1)

    for t in _nice_ticks(x0, x1):
        u = round(to_px(np.array(t), np.array(y0))[0])
        cv2.line(img, (u, top), (u, top + ph), (235, 235, 235), 1)
        cv2.putText(img, _fmt(t), (u - 14, top + ph + 14), _FONT, 0.35, (60, 60, 60), 1, cv2.LINE_AA)
    for t in _nice_ticks(y0, y1):
        v = round(to_px(np.array(x0), np.array(t))[1])
        cv2.line(img, (left, v), (left + pw, v), (235, 235, 235), 1)
        cv2.putText(img, _fmt(t), (4, v + 4), _FONT, 0.35, (60, 60, 60), 1, cv2.LINE_AA)
    for r in p.circles:
        c = to_px(np.array(0.0), np.array(0.0))
        rad = r / (x1 - x0) * pw
        cv2.circle(img, (round(c[0]), round(c[1])), round(rad), (150, 150, 150), 1, cv2.LINE_AA)
        cv2.putText(img, f"{r:g}", (int(c[0] + rad * 0.71) + 2, int(c[1] - rad * 0.71)), _FONT, 0.35, (120, 120, 120), 1)
    for s in p.series:
        ok = np.isfinite(s.x) & np.isfinite(s.y)
        pts = to_px(s.x[ok], s.y[ok])
        if s.points:
            for u, v in pts.astype(int):
                cv2.circle(img, (u, v), 2, s.color, -1, cv2.LINE_AA)
        elif len(pts) > 1:
            if len(pts) > 4 * pw:  # more samples than pixels: keep each column's min and max so peaks stay visible
                pts = _decimate(pts, 2 * pw)
            cv2.polylines(img, [np.round(pts * 4).astype(np.int32)], False, s.color, s.thickness, cv2.LINE_AA, shift=2)
    cv2.rectangle(img, (left, top), (left + pw, top + ph), (90, 90, 90), 1)
    cv2.putText(img, p.title, (left, 18), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, p.xlabel, (left + pw // 2 - 4 * len(p.xlabel), h - 8), _FONT, 0.4, (40, 40, 40), 1, cv2.LINE_AA)
    if p.ylabel:
        lab = np.full((16, 8 * len(p.ylabel) + 8, 3), 255, np.uint8)
        cv2.putText(lab, p.ylabel, (2, 12), _FONT, 0.4, (40, 40, 40), 1, cv2.LINE_AA)
        lab = cv2.rotate(lab, cv2.ROTATE_90_COUNTERCLOCKWISE)
        y_start = max(top, top + ph // 2 - lab.shape[0] // 2)
        hh = min(lab.shape[0], h - y_start)
        img[y_start : y_start + hh, 40:56] = np.minimum(img[y_start : y_start + hh, 40:56], lab[:hh])
    labelled = [s for s in p.series if s.label]
    for i, s in enumerate(labelled):
        y = top + 12 + 14 * i
        cv2.line(img, (left + pw - 150, y - 4), (left + pw - 132, y - 4), s.color, 2)
        cv2.putText(img, s.label[:22], (left + pw - 128, y), _FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def _decimate(pts: np.ndarray, n: int) -> np.ndarray:
    idx = np.linspace(0, len(pts), n + 1).astype(int)
    out = []
    for a, b in itertools.pairwise(idx):
        seg = pts[a:b]
        if len(seg):
            i0, i1 = np.argmin(seg[:, 1]), np.argmax(seg[:, 1])
            out.extend(seg[sorted((i0, i1))])
    return np.asarray(out)


def figure(panels: list[Panel | np.ndarray], cols: int = 2, w: int = 640, h: int = 360) -> np.ndarray:
    """Panels (or ready images of the same size) laid out in a grid."""
    tiles = [draw_panel(p, w, h) if isinstance(p, Panel) else cv2.resize(p, (w, h)) for p in panels]
    while len(tiles) % cols:
        tiles.append(np.full((h, w, 3), 255, np.uint8))
    rows = [np.hstack(tiles[i : i + cols]) for i in range(0, len(tiles), cols)]
    return np.vstack(rows)


def save_png(path: str | Path, img: np.ndarray) -> Path:
    """Write a PNG (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")
    return path
