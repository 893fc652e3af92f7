"""The learned success reward on the robot side: an ONNX classifier and the metadata that says what it was trained on.

    clf = RewardClassifier.load("runs/clf/classifier.onnx", task="Panda-Lift-Cube", cameras=("workspace",))
    p = clf.prob(image=rgb)                 # (H, W, 3) uint8 -> success probability
    reward, terminated = classifier_reward(clf, op_success, op_failure, image=rgb)

`load` refuses, in one sentence, a classifier trained for another task, another camera set or another image
size, because a classifier that looks at the wrong scene returns confident nonsense rather than an error.
`classifier_reward` is the sparse reward of a HIL step: the operator's success/failure buttons win, else the
classifier's probability against the threshold picked at training time. numpy + onnxruntime only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

CLASSIFIER_KIND = "s2r-reward-classifier"
CLASSIFIER_VERSION = 1


class ClassifierError(ValueError):
    """A classifier that cannot be used here, or input it cannot read; the message says which and what to do."""


class RewardClassifier:
    """An onnxruntime session plus its metadata (`threshold`, `task`, `cameras`, `image_size`, `state_dim`)."""

    def __init__(self, session: Any, meta: dict[str, Any], path: Path) -> None:
        self.session = session
        self.meta = meta
        self.path = path
        self.threshold = float(meta["threshold"])
        self.image_size = tuple(meta["image_size"]) if meta.get("image_size") else None
        self.state_dim = meta.get("state_dim")
        self.inputs = list(meta["inputs_order"])

    @classmethod
    def load(cls, path: str | Path, *, task: str, cameras: tuple[str, ...] | None = None,
             image_size: tuple[int, int] | None = None) -> RewardClassifier:
        """Open `path` (+ `path.json`) and check it was trained for `task`, `cameras` and `image_size`."""
        import onnxruntime as ort

        path = Path(path)
        meta_path = path.with_name(path.name + ".json")
        if not path.is_file() or not meta_path.is_file():
            raise ClassifierError(f"reward classifier {path} or its metadata {meta_path.name} is missing; train one with "
                                  "`s2r hil classifier`")
        meta = json.loads(meta_path.read_text())
        if meta.get("kind") != CLASSIFIER_KIND or meta.get("version") != CLASSIFIER_VERSION:
            raise ClassifierError(f"{meta_path} is not reward classifier metadata version {CLASSIFIER_VERSION} (kind "
                                  f"{meta.get('kind')!r}, version {meta.get('version')!r}); re-export it")
        if meta["task"] != task:
            raise ClassifierError(f"reward classifier {path.name} was trained for task {meta['task']}, not {task}; "
                                  f"train one on {task}'s labels")
        if cameras is not None and meta.get("image_size") and tuple(meta["cameras"]) != tuple(cameras):
            raise ClassifierError(f"reward classifier {path.name} was trained on cameras {meta['cameras']}, but this robot "
                                  f"gives {list(cameras)}; train it on frames from these cameras")
        if image_size is not None and meta.get("image_size") and tuple(meta["image_size"]) != tuple(image_size):
            raise ClassifierError(f"reward classifier {path.name} takes {meta['image_size'][0]}x{meta['image_size'][1]} "
                                  f"images, the camera gives {image_size[0]}x{image_size[1]}; resize or retrain")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # the control loop's core stays free
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return cls(session, meta, path)

    def _image(self, image: Any) -> np.ndarray:
        if isinstance(image, (bytes, bytearray, memoryview)):
            raise ClassifierError("the reward classifier takes decoded RGB pixels, not encoded bytes; decode the JPEG/PNG "
                                  "first (e.g. cv2.imdecode, then BGR->RGB)")
        img = np.asarray(image)
        if img.ndim == 3:
            img = img[None]
        h, w = self.image_size
        if img.dtype != np.uint8 or img.ndim != 4 or img.shape[-1] != 3:
            raise ClassifierError(f"the reward classifier takes (H, W, 3) uint8 RGB images, got shape {np.shape(image)} "
                                  f"dtype {img.dtype}; convert float/BGRA/grey frames to RGB uint8")
        if img.shape[1:3] != (h, w):
            raise ClassifierError(f"the reward classifier takes {h}x{w} images, got {img.shape[1]}x{img.shape[2]}; resize "
                                  "the camera image to the size it was trained on")
        return img

    def prob(self, image: np.ndarray | None = None, state: np.ndarray | None = None) -> np.ndarray:
        """Success probability, (B,) for a batch or shape () for one frame."""
        feeds: dict[str, np.ndarray] = {}
        single = False
        if "image" in self.inputs:
            if image is None:
                raise ClassifierError(f"reward classifier {self.path.name} needs an image (inputs {self.inputs})")
            single = np.ndim(image) == 3
            feeds["image"] = self._image(image)
        if "state" in self.inputs:
            if state is None:
                raise ClassifierError(f"reward classifier {self.path.name} needs the state (inputs {self.inputs})")
            st = np.asarray(state, dtype=np.float32)
            single = single or st.ndim == 1
            st = st.reshape(-1, st.shape[-1])
            if st.shape[-1] != self.state_dim:
                raise ClassifierError(f"reward classifier {self.path.name} takes {self.state_dim} state values, got "
                                      f"{st.shape[-1]}; the policy group's layout differs from training")
            feeds["state"] = st
        out = self.session.run(None, feeds)[0]
        return out[0] if single else out

    def __call__(self, image: np.ndarray | None = None, state: np.ndarray | None = None) -> bool | np.ndarray:
        """Success (probability at or above the trained threshold)."""
        return self.prob(image, state) >= self.threshold


def classifier_reward(classifier: RewardClassifier, op_success: bool, op_failure: bool, *,
                      image: np.ndarray | None = None, state: np.ndarray | None = None) -> tuple[float, bool]:
    """(reward, terminated) of one HIL step: the operator's buttons override the classifier."""
    if op_success or op_failure:
        return float(op_success and not op_failure), True
    success = bool(classifier(image, state))
    return float(success), success
