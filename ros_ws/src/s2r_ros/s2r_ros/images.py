"""sensor_msgs/Image <-> numpy without cv_bridge (which needs OpenCV built against ROS; the robot side needs neither).

Only the 8-bit colour encodings a policy can take are read: `rgb8` as is and `bgr8` with its channels
swapped (most USB and RealSense drivers publish one of the two). Rows may be padded (`step` larger than
width * 3, as drivers aligning rows to 4 or 64 bytes send them); the padding is dropped.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image

ENCODINGS = ("rgb8", "bgr8")


class ImageEncodingError(ValueError):
    """An Image message this module cannot turn into an (H, W, 3) uint8 RGB array."""


def image_to_rgb(msg: Image, topic: str) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from an `rgb8` or `bgr8` sensor_msgs/Image (a view where no copy is needed).

    Args:
        msg: The message.
        topic: Where it came from, for the error message.

    Raises:
        ImageEncodingError: Another encoding, or a `step`/`data` size that does not fit the width and height.
    """
    enc = msg.encoding.lower()
    if enc not in ENCODINGS:
        raise ImageEncodingError(f"image on {topic} has encoding '{msg.encoding}'; the policy takes "
                                 f"{' or '.join(ENCODINGS)}: set the camera driver's colour format to one of them")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if step < w * 3 or data.size < h * step:
        raise ImageEncodingError(f"image on {topic} is {w}x{h} {msg.encoding} with step {step} and {data.size} bytes; "
                                 f"it needs step >= {w * 3} and {h} * step bytes: the driver sends a broken message")
    rows = data[:h * step].reshape(h, step)
    img = rows[:, :w * 3].reshape(h, w, 3)  # drops any row padding
    return img[:, :, ::-1] if enc == "bgr8" else img


def rgb_to_image(img: np.ndarray, stamp: Time, frame_id: str, msg: Image | None = None) -> Image:
    """An `rgb8` sensor_msgs/Image (unpadded rows) from an (H, W, 3) uint8 array; fills `msg` when given.

    Raises:
        ImageEncodingError: The array is not (H, W, 3) uint8.
    """
    a = np.asarray(img)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ImageEncodingError(f"an rgb8 image needs an (H, W, 3) uint8 array, got {a.dtype} {a.shape}")
    out = msg if msg is not None else Image()
    out.header.stamp = stamp
    out.header.frame_id = frame_id
    out.height, out.width = int(a.shape[0]), int(a.shape[1])
    out.encoding = "rgb8"
    out.is_bigendian = 0
    out.step = int(a.shape[1]) * 3
    out.data = np.ascontiguousarray(a).tobytes()
    return out
