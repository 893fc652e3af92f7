"""sensor_msgs/Image <-> numpy (s2r_ros.images): rgb8 and bgr8, padded rows, refused encodings. No DDS."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from s2r_ros.images import ImageEncodingError, image_to_rgb, rgb_to_image
from sensor_msgs.msg import Image

TOPIC = "/camera/workspace/image_raw"


def frame(h: int = 5, w: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def raw(img: np.ndarray, encoding: str, pad: int = 0) -> Image:
    """A message built by hand the way a driver fills it, each row followed by `pad` junk bytes."""
    h, w, _ = img.shape
    rows = np.concatenate([img.reshape(h, w * 3), np.full((h, pad), 0xAB, np.uint8)], axis=1)
    return Image(height=h, width=w, encoding=encoding, step=w * 3 + pad, data=rows.tobytes())


def test_round_trip_through_a_message() -> None:
    img = frame()
    msg = rgb_to_image(img, Time(sec=3, nanosec=5), "workspace_optical_frame")
    assert (msg.height, msg.width, msg.step, msg.encoding) == (5, 7, 21, "rgb8")
    assert msg.header.frame_id == "workspace_optical_frame" and msg.header.stamp.sec == 3
    back = image_to_rgb(msg, TOPIC)
    assert back.dtype == np.uint8 and back.shape == (5, 7, 3)
    np.testing.assert_array_equal(back, img)
    # The same message object is reused by the bridge: a second frame replaces the first completely.
    other = frame(seed=1)
    assert rgb_to_image(other, Time(), "f", msg) is msg
    np.testing.assert_array_equal(image_to_rgb(msg, TOPIC), other)


@pytest.mark.parametrize("pad", [1, 3, 11])
def test_padded_rows_are_dropped(pad: int) -> None:
    img = frame(h=4, w=5)
    got = image_to_rgb(raw(img, "rgb8", pad), TOPIC)
    np.testing.assert_array_equal(got, img)
    assert not (got == 0xAB).all(axis=2).any()  # no padding byte reached the picture


def test_bgr8_swaps_channels() -> None:
    img = frame()
    got = image_to_rgb(raw(img[:, :, ::-1], "bgr8", pad=2), TOPIC)
    np.testing.assert_array_equal(got, img)
    assert got[0, 0, 0] == img[0, 0, 0] and got[0, 0, 2] == img[0, 0, 2]


@pytest.mark.parametrize("encoding", ["mono8", "rgba8", "16UC1", "yuv422"])
def test_other_encodings_are_refused_naming_topic_and_encoding(encoding: str) -> None:
    msg = Image(height=2, width=2, encoding=encoding, step=8, data=bytes(16))
    with pytest.raises(ImageEncodingError, match=rf"^image on {TOPIC} has encoding '{encoding}'; the policy takes "
                                                 r"rgb8 or bgr8: set the camera driver's colour format"):
        image_to_rgb(msg, TOPIC)


def test_a_message_shorter_than_its_header_says_is_refused() -> None:
    msg = raw(frame(h=4, w=4), "rgb8")
    msg.height = 5  # one row more than the data holds
    with pytest.raises(ImageEncodingError, match=rf"image on {TOPIC} is 4x5 rgb8 with step 12 and 48 bytes"):
        image_to_rgb(msg, TOPIC)
    short_step = raw(frame(h=2, w=4), "rgb8")
    short_step.step = 10
    with pytest.raises(ImageEncodingError, match="it needs step >= 12"):
        image_to_rgb(short_step, TOPIC)


def test_only_hwc_uint8_arrays_become_messages() -> None:
    with pytest.raises(ImageEncodingError, match=r"needs an \(H, W, 3\) uint8 array, got float32 \(4, 4, 3\)"):
        rgb_to_image(np.zeros((4, 4, 3), np.float32), Time(), "f")
    with pytest.raises(ImageEncodingError, match=r"got uint8 \(4, 4\)"):
        rgb_to_image(np.zeros((4, 4), np.uint8), Time(), "f")
