"""Success/failure-labelled frames for the reward classifier: the file `s2r hil label` writes, on a robot or in sim.

One `.npz` file (numpy only, so the robot computer records it with the console or a device's buttons):

- `label` (N,) uint8: 1 = this frame shows success, 0 = it does not;
- `episode` (N,) int32: episode index of each frame (the classifier splits train / held-out by episode);
- `episode_success` (N,) bool: whether the frame's episode ended in success (failed episodes are where the
  hard negatives are);
- `intervened` (N,) bool: the operator was in control at this frame (intervened episodes are mined too);
- `image` (N, H, W, 3) uint8 RGB, optional; `state` (N, D) float32, optional (at least one of the two);
- `meta`: a JSON string: format, version, task, cameras, image_size, state_dim, source (sim / console / device).

`LabelRecorder.add(...)` appends one frame; `end_episode(success)` closes an episode; `save(path)` writes.
`load_labels(path)` checks everything a trainer relies on and says what is wrong in one sentence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "s2r-reward-labels"
VERSION = 1


class LabelFileError(ValueError):
    """A label file cannot train a classifier; the message names the file, the field and the fix."""


@dataclass(frozen=True)
class LabelSet:
    """A loaded label file (arrays share the first dimension N)."""

    label: np.ndarray  # (N,) uint8
    episode: np.ndarray  # (N,) int32
    episode_success: np.ndarray  # (N,) bool
    intervened: np.ndarray  # (N,) bool
    image: np.ndarray | None  # (N, H, W, 3) uint8
    state: np.ndarray | None  # (N, D) float32
    meta: dict[str, Any]

    @property
    def task(self) -> str:
        return str(self.meta["task"])

    def __len__(self) -> int:
        return len(self.label)


class LabelRecorder:
    """Appends frames as they come (a control loop calls `add` every step) and writes one file at the end."""

    def __init__(self, task: str, *, cameras: tuple[str, ...] = (), image_size: tuple[int, int] | None = None,
                 state_dim: int | None = None, source: str = "sim") -> None:
        if image_size is None and state_dim is None:
            raise LabelFileError("a label recorder needs images (image_size) or state (state_dim), or both")
        self.meta = {"format": FORMAT, "version": VERSION, "task": task, "cameras": list(cameras),
                     "image_size": list(image_size) if image_size else None, "state_dim": state_dim, "source": source}
        self._rows: dict[str, list[Any]] = {k: [] for k in ("label", "episode", "intervened", "image", "state")}
        self._outcomes: list[bool] = []
        self.episode = 0

    def add(self, *, label: bool, image: np.ndarray | None = None, state: np.ndarray | None = None,
            intervened: bool = False) -> None:
        size = self.meta["image_size"]
        if size is not None:
            img = np.asarray(image) if image is not None else None
            if img is None or img.dtype != np.uint8 or img.shape != (*size, 3):
                got = "none" if img is None else f"shape {img.shape} dtype {img.dtype}"
                raise LabelFileError(f"label frame image must be ({size[0]}, {size[1]}, 3) uint8 RGB as the recorder was "
                                     f"opened with, got {got}; resize/convert the camera image first")
            self._rows["image"].append(img)
        if self.meta["state_dim"] is not None:
            st = np.asarray(state, dtype=np.float32).reshape(-1) if state is not None else None
            if st is None or st.shape != (self.meta["state_dim"],):
                raise LabelFileError(f"label frame state must have {self.meta['state_dim']} values, got "
                                     f"{None if st is None else st.shape}")
            self._rows["state"].append(st)
        self._rows["label"].append(int(bool(label)))
        self._rows["episode"].append(self.episode)
        self._rows["intervened"].append(bool(intervened))

    def end_episode(self, success: bool) -> None:
        self._outcomes.append(bool(success))
        self.episode += 1

    @property
    def frames(self) -> int:
        return len(self._rows["label"])

    @property
    def positives(self) -> int:
        return int(sum(self._rows["label"]))

    def extend(self, other: LabelRecorder) -> None:
        """Append the finished episodes of `other` (same task and layout), renumbered after this one's."""
        if {k: v for k, v in other.meta.items() if k != "source"} != {k: v for k, v in self.meta.items() if k != "source"}:
            raise LabelFileError(f"cannot merge label recordings with different layouts: {other.meta} vs {self.meta}")
        if self.frames and self._rows["episode"][-1] >= self.episode:
            raise LabelFileError("end the current episode before merging another recording")
        keep = [e < len(other._outcomes) for e in other._rows["episode"]]
        for key in ("label", "intervened", "image", "state"):
            self._rows[key] += [v for v, k in zip(other._rows[key], keep, strict=False) if k]
        self._rows["episode"] += [e + self.episode for e, k in zip(other._rows["episode"], keep, strict=True) if k]
        self._outcomes += other._outcomes
        self.episode += len(other._outcomes)

    def save(self, path: str | Path) -> Path:
        """Write the frames of the finished episodes (a trailing unfinished episode is dropped)."""
        ep = np.asarray(self._rows["episode"], dtype=np.int32)
        keep = ep < len(self._outcomes)
        arrays: dict[str, np.ndarray] = {
            "label": np.asarray(self._rows["label"], np.uint8)[keep], "episode": ep[keep],
            "episode_success": np.asarray(self._outcomes, bool)[ep[keep]] if keep.any() else np.zeros(0, bool),
            "intervened": np.asarray(self._rows["intervened"], bool)[keep],
            "meta": np.asarray(json.dumps(self.meta))}
        if self._rows["image"]:
            arrays["image"] = np.stack(self._rows["image"])[keep]
        if self._rows["state"]:
            arrays["state"] = np.stack(self._rows["state"])[keep]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)  # never a half-written label file
        return path


def load_labels(path: str | Path) -> LabelSet:
    """Read and check a label file; raises `LabelFileError` with one sentence naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise LabelFileError(f"label file {path} does not exist; record one with `s2r hil label`")
    try:
        z = np.load(path, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
    except Exception as exc:  # not an npz, or no metadata
        raise LabelFileError(f"{path} is not an s2r label file (written by `s2r hil label`): {exc}") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise LabelFileError(f"{path}: metadata format {meta.get('format')!r} version {meta.get('version')!r}, expected "
                             f"{FORMAT!r} version {VERSION}")
    for key in ("label", "episode", "episode_success", "intervened"):
        if key not in z.files:
            raise LabelFileError(f"{path} has no '{key}' array; re-record it with `s2r hil label`")
    label = z["label"].astype(np.uint8)
    n = len(label)
    image = z["image"] if "image" in z.files else None
    state = z["state"].astype(np.float32) if "state" in z.files else None
    if image is None and state is None:
        raise LabelFileError(f"{path} holds neither 'image' nor 'state'; a classifier needs one of them")
    for key, arr in (("episode", z["episode"]), ("episode_success", z["episode_success"]),
                     ("intervened", z["intervened"]), ("image", image), ("state", state)):
        if arr is not None and len(arr) != n:
            raise LabelFileError(f"{path}: '{key}' has {len(arr)} rows but 'label' has {n}; the file is inconsistent")
    if image is not None and (image.dtype != np.uint8 or image.ndim != 4 or image.shape[3] != 3):
        raise LabelFileError(f"{path}: 'image' must be (N, H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}")
    positives = int(label.sum())
    if positives == 0 or positives == n:
        only = "success" if positives else "failure"
        raise LabelFileError(f"{path} has only {only} frames ({n}); a classifier needs both classes: label some "
                             f"{'failure' if positives else 'success'} frames too")
    return LabelSet(label=label, episode=z["episode"].astype(np.int32), episode_success=z["episode_success"].astype(bool),
                    intervened=z["intervened"].astype(bool), image=image, state=state, meta=meta)
