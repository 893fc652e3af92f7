"""Where calibration images come from: a folder, a recorded MCAP bag, or a live ROS 2 image topic.

Every source returns a list of (name, grey uint8 image) with one image size, so calibration code never
cares where pictures came from. The live topic needs rclpy (a ROS 2 install) and is imported only when
used; recording the topic with `ros2 bag record` and passing the bag works without ROS.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from s2r.calibration import rosmsg
from s2r.calibration.schema import CalibrationError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm")
Images = list[tuple[str, np.ndarray]]


def load_image_folder(folder: str | Path) -> Images:
    """All images in a folder (sorted by name), as grey uint8.

    Raises:
        CalibrationError: The folder is missing, holds no images, or an image cannot be read or has a
            different size from the first.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"{folder}: no such image folder; pass the folder that holds the calibration pictures")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"{folder}: holds no images ({', '.join(IMAGE_SUFFIXES)}); save the calibration "
                               "pictures there or pass the right folder")
    out: Images = []
    for p in files:
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise CalibrationError(f"{p}: cannot be read as an image; delete or re-save it")
        out.append((p.name, img))
    return _same_size(out, str(folder))


def _same_size(images: Images, source: str) -> Images:
    h, w = images[0][1].shape[:2]
    for name, img in images[1:]:
        if img.shape[:2] != (h, w):
            raise CalibrationError(f"{source}/{name}: is {img.shape[1]}x{img.shape[0]} but {images[0][0]} is {w}x{h}; "
                                   "one calibration is for one camera mode: keep images of one size only")
    return images


def image_msg_to_gray(encoding: str, height: int, width: int, step: int, data: bytes | np.ndarray,
                      is_bigendian: int = 0) -> np.ndarray:
    """Convert the fields of a sensor_msgs/Image to a grey uint8 array.

    Supports mono8, mono16, 8UC1, 16UC1, bgr8, rgb8, bgra8, rgba8 (what cameras used for calibration send).
    """
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    enc = encoding.lower()
    channels = {"mono8": 1, "8uc1": 1, "bgr8": 3, "rgb8": 3, "bgra8": 4, "rgba8": 4, "mono16": 2, "16uc1": 2}
    if enc not in channels:
        raise CalibrationError(f"image encoding '{encoding}' is not supported for calibration; publish mono8, mono16, "
                               "bgr8 or rgb8 (e.g. the camera driver's image_raw, or image_proc's mono output)")
    rows = buf[: height * step].reshape(height, step)
    if enc in ("mono16", "16uc1"):
        px = rows[:, : width * 2].copy().view(">u2" if is_bigendian else "<u2").reshape(height, width)
        return (px >> 8).astype(np.uint8) if px.max() > 255 else px.astype(np.uint8)
    c = channels[enc]
    px = rows[:, : width * c].reshape(height, width, c) if c > 1 else rows[:, :width]
    if c == 1:
        return np.ascontiguousarray(px)
    code = {"bgr8": cv2.COLOR_BGR2GRAY, "rgb8": cv2.COLOR_RGB2GRAY, "bgra8": cv2.COLOR_BGRA2GRAY,
            "rgba8": cv2.COLOR_RGBA2GRAY}[enc]
    return cv2.cvtColor(np.ascontiguousarray(px), code)


def load_mcap_images(path: str | Path, topic: str, *, every: int = 1, max_images: int = 0) -> Images:
    """Images from a sensor_msgs/Image topic recorded in an MCAP bag (rosbag2's default format).

    Args:
        path: The .mcap file.
        topic: Image topic, e.g. "/camera/image_raw".
        every: Keep every n-th message (consecutive frames of a video are nearly the same view).
        max_images: Stop after this many (0 = all).
    """
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: no such MCAP file; record one with `ros2 bag record -s mcap {topic}`")
    out: Images = []
    with path.open("rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        topics = {c.topic: c for c in reader.get_summary().channels.values()} if reader.get_summary() else {}
        if topics and topic not in topics:
            raise CalibrationError(f"{path}: has no topic '{topic}'; its topics are {sorted(topics)}; pass one of "
                                   "them with --topic")
        for i, (_schema, _channel, msg, m) in enumerate(reader.iter_decoded_messages(topics=[topic])):
            if i % max(every, 1):
                continue
            out.append((f"{topic.strip('/').replace('/', '_')}_{msg.log_time}",
                        image_msg_to_gray(m.encoding, m.height, m.width, m.step, m.data, m.is_bigendian)))
            if max_images and len(out) >= max_images:
                break
    if not out:
        raise CalibrationError(f"{path}: topic '{topic}' holds no messages")
    return _same_size(out, f"{path}:{topic}")


def write_mcap_images(images: Images, path: str | Path, topic: str = "/camera/image_raw", *, period_s: float = 0.5,
                      t0_ns: int = 1_700_000_000_000_000_000) -> Path:
    """Write grey images as a sensor_msgs/Image (mono8) topic of an MCAP bag, as `ros2 bag record` would."""
    from mcap_ros2.writer import Writer

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        w = Writer(f)
        schema = w.register_msgdef("sensor_msgs/msg/Image", rosmsg.IMAGE)
        for i, (_name, img) in enumerate(images):
            ns = t0_ns + round(i * period_s * 1e9)
            h, wd = img.shape[:2]
            msg = {"header": {"stamp": rosmsg.stamp(ns), "frame_id": "camera"}, "height": h, "width": wd,
                   "encoding": "mono8", "is_bigendian": 0, "step": wd, "data": np.ascontiguousarray(img).tobytes()}
            w.write_message(topic, schema, msg, log_time=ns, publish_time=ns)
        w.finish()
    return path


def grab_ros_images(topic: str, count: int, *, period_s: float = 1.0, timeout_s: float = 120.0) -> Images:
    """Collect `count` images from a live sensor_msgs/Image topic, one every `period_s` seconds.

    Move the board between grabs. Needs rclpy (source your ROS 2 setup first). Runs in its own rclpy
    context, so it works beside other ROS code in the same process.
    """
    try:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image
    except ImportError:
        raise CalibrationError(f"reading images from ROS topic '{topic}' needs rclpy and sensor_msgs: source your ROS 2 "
                               f"setup (e.g. /opt/ros/jazzy/setup.bash), or record the topic with `ros2 bag record -s "
                               f"mcap {topic}` and pass the bag with --mcap") from None
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("s2r_calibration_grabber", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    out: Images = []
    last = [-np.inf]

    def on_image(msg: Any) -> None:
        now = time.monotonic()
        if now - last[0] >= period_s and len(out) < count:
            last[0] = now
            out.append((f"ros_{len(out):03d}", image_msg_to_gray(msg.encoding, msg.height, msg.width, msg.step,
                                                                 msg.data, msg.is_bigendian)))

    node.create_subscription(Image, topic, on_image, qos_profile_sensor_data)
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < count and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    if not out:
        raise CalibrationError(f"no image arrived on ROS topic '{topic}' within {timeout_s:.0f} s; check `ros2 topic "
                               "list` and that the camera driver is running")
    return _same_size(out, topic)
