"""Calibration boards (ChArUco and plain chessboard): geometry, detection, and a printable image.

Board frame: origin at the board's top-left outer corner, x along the squares_x direction, y down the
board, z into the board (the frame OpenCV's ChArUco board uses). Corners are the inner chessboard
corners, which are what both board kinds locate with sub-pixel accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from s2r.calibration.schema import CalibrationError


@dataclass(frozen=True, kw_only=True)
class BoardConfig:
    """The printed board.

    Attributes:
        kind: "charuco" (markers identify each corner, so partial views and board pose are unambiguous) or
            "chessboard" (the whole board must be visible; its pose is ambiguous up to a half turn).
        squares_x: Squares along the board's x (columns).
        squares_y: Squares along the board's y (rows).
        square_m: Side of one square in metres, as printed (measure it: printers scale).
        marker_m: Side of an ArUco marker in metres (ChArUco only).
        dictionary: OpenCV ArUco dictionary name, e.g. "DICT_4X4_50" (ChArUco only).
        min_corners: An image with fewer detected corners does not count as a view of the board.
    """

    kind: str = "charuco"
    squares_x: int = 9
    squares_y: int = 6
    square_m: float = 0.03
    marker_m: float = 0.022
    dictionary: str = "DICT_4X4_50"
    min_corners: int = 8

    def check(self) -> None:
        """Raise CalibrationError for settings that describe no printable board."""
        if self.kind not in ("charuco", "chessboard"):
            raise CalibrationError(f"board kind '{self.kind}' is unknown; use 'charuco' or 'chessboard'")
        if self.squares_x < 3 or self.squares_y < 3:
            raise CalibrationError(f"board of {self.squares_x}x{self.squares_y} squares is too small; need at least 3x3")
        if self.square_m <= 0:
            raise CalibrationError(f"board square size {self.square_m} m must be positive")
        if self.kind == "charuco":
            if not 0 < self.marker_m < self.square_m:
                raise CalibrationError(f"ChArUco marker size {self.marker_m} m must be positive and smaller than the "
                                       f"square size {self.square_m} m")
            if not hasattr(cv2.aruco, self.dictionary):
                raise CalibrationError(f"unknown ArUco dictionary '{self.dictionary}'; e.g. DICT_4X4_50, DICT_5X5_100, "
                                       "DICT_6X6_250")

    def describe(self) -> str:
        """One line that a person can compare with the printed board."""
        s = f"{self.kind} {self.squares_x}x{self.squares_y} squares of {self.square_m * 1000:.1f} mm"
        if self.kind == "charuco":
            s += f", markers {self.marker_m * 1000:.1f} mm, {self.dictionary}"
        return s

    @property
    def size_m(self) -> tuple[float, float]:
        """(width, height) of the squares area in metres."""
        return self.squares_x * self.square_m, self.squares_y * self.square_m


@dataclass(frozen=True)
class Detection:
    """Board corners found in one image.

    Attributes:
        object_points: (n, 3) float32 corner positions in the board frame (metres).
        image_points: (n, 2) float32 pixel positions.
        ids: (n,) int corner ids (index into `Board.corners`).
    """

    object_points: np.ndarray
    image_points: np.ndarray
    ids: np.ndarray


class Board:
    """Detects one board in grey images."""

    def __init__(self, cfg: BoardConfig) -> None:
        cfg.check()
        self.cfg = cfg
        nx, ny = cfg.squares_x - 1, cfg.squares_y - 1
        # Inner corners, row-major (y outer), in the board frame; the same ids ChArUco reports.
        gx, gy = np.meshgrid(np.arange(1, nx + 1), np.arange(1, ny + 1))
        self.corners = np.stack([gx.ravel(), gy.ravel(), np.zeros(nx * ny)], axis=1).astype(np.float32) * cfg.square_m
        if cfg.kind == "charuco":
            d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, cfg.dictionary))
            self._board = cv2.aruco.CharucoBoard((cfg.squares_x, cfg.squares_y), cfg.square_m, cfg.marker_m, d)
            params = cv2.aruco.DetectorParameters()
            # Sub-pixel marker corners give a better homography to predict the chessboard corners from.
            params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
            self._detector = cv2.aruco.CharucoDetector(self._board, cv2.aruco.CharucoParameters(), params)
            expected = self._board.getChessboardCorners()
            if not np.allclose(expected, self.corners, atol=1e-6):  # guards against an OpenCV layout change
                raise RuntimeError("OpenCV's ChArUco corner layout differs from s2r's board frame")

    def detect(self, gray: np.ndarray) -> Detection | None:
        """Find the board's corners in a grey (uint8) image.

        Returns:
            The detection, or None when fewer than `min_corners` corners were found.
        """
        if self.cfg.kind == "charuco":
            cc, ci, _mc, _mi = self._detector.detectBoard(gray)
            if ci is None or len(ci) < self.cfg.min_corners:
                return None
            ids = ci.ravel().astype(int)
            pts = cc.reshape(-1, 2).astype(np.float32)
        else:
            pattern = (self.cfg.squares_x - 1, self.cfg.squares_y - 1)
            ok, pts = cv2.findChessboardCornersSB(gray, pattern, flags=cv2.CALIB_CB_EXHAUSTIVE | cv2.CALIB_CB_ACCURACY)
            if not ok:
                return None
            # The SB detector's own corner positions carry a pose-dependent bias (a few tenths of a pixel that
            # grows with tilt and blur, and shows up as a focal length off by ~0.5 %): it only finds the board
            # here, and the saddle-point refinement below places each corner.
            pts = refine_chessboard_corners(gray, pts.reshape(-1, 2), (self.cfg.squares_y - 1, self.cfg.squares_x - 1))
            ids = np.arange(len(pts))
        return Detection(self.corners[ids], pts, ids)

    def image(self, px_per_m: float, margin_m: float | None = None) -> np.ndarray:
        """The board as a grey image to print (or to render synthetic views from).

        Args:
            px_per_m: Resolution.
            margin_m: White border around the squares (default: one square), which detection needs.

        Returns:
            uint8 image; board point (x, y) sits at pixel-centre coordinate
            ((x + margin) * px_per_m - 0.5, (y + margin) * px_per_m - 0.5).
        """
        cfg = self.cfg
        margin = cfg.square_m if margin_m is None else margin_m
        w, h = (round(s * px_per_m) for s in cfg.size_m)
        if cfg.kind == "charuco":
            img = self._board.generateImage((w, h), marginSize=0, borderBits=1)
        else:
            u = (np.arange(w) + 0.5) / px_per_m // cfg.square_m
            v = (np.arange(h) + 0.5) / px_per_m // cfg.square_m
            img = np.where((u[None, :] + v[:, None]) % 2 == 0, 0, 255).astype(np.uint8)
        m = round(margin * px_per_m)
        return cv2.copyMakeBorder(img, m, m, m, m, cv2.BORDER_CONSTANT, value=255)


def refine_chessboard_corners(gray: np.ndarray, pts: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Sub-pixel saddle points of a chessboard's inner corners, each refined in a window sized to its squares.

    The window must hold one corner and no neighbour: a fixed window is too small for a near board (less
    accurate) and swallows neighbours on a far or steeply tilted one (biased). Each corner's half-window is
    0.4 of the distance to its nearest grid neighbour, clipped to 2..12 px.

    Args:
        gray: uint8 image.
        pts: (rows * cols, 2) corners in row-major grid order, as the detector returned them.
        grid: (rows, cols) of inner corners.

    Returns:
        (n, 2) float32 refined corners, same order.
    """
    rows, cols = grid
    g = pts.reshape(rows, cols, 2).astype(np.float64)
    nn = np.full((rows, cols), np.inf)
    dy = np.linalg.norm(np.diff(g, axis=0), axis=2)
    dx = np.linalg.norm(np.diff(g, axis=1), axis=2)
    nn[1:] = np.minimum(nn[1:], dy)
    nn[:-1] = np.minimum(nn[:-1], dy)
    nn[:, 1:] = np.minimum(nn[:, 1:], dx)
    nn[:, :-1] = np.minimum(nn[:, :-1], dx)
    win = np.clip(np.floor(0.4 * nn.ravel()), 2, 12).astype(int)
    out = pts.reshape(-1, 2).astype(np.float32).copy()
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5)
    for w in np.unique(win):
        sel = np.flatnonzero(win == w)
        out[sel] = cv2.cornerSubPix(gray, out[sel].reshape(-1, 1, 2).copy(), (int(w), int(w)), (-1, -1), crit).reshape(-1, 2)
    return out
