"""Calibration images grabbed from a live sensor_msgs/Image topic over real DDS (skipped without rclpy)."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from s2r.calibration.camera import CameraCalibConfig, calibrate_camera
from s2r.calibration.images import grab_ros_images, load_image_folder

from tests.calibration.conftest import ImageSet

rclpy = pytest.importorskip("rclpy", reason="ROS 2 Python packages missing: pip install -e .[ros]")


def test_grab_from_topic_and_calibrate(intrinsics_set: ImageSet, monkeypatch: pytest.MonkeyPatch) -> None:
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    # Own DDS domain, discovery on this machine only, UDP loopback (no shared-memory files left in /dev/shm).
    monkeypatch.setenv("ROS_DOMAIN_ID", str(180 + os.getpid() % 40))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("FASTDDS_BUILTIN_TRANSPORTS", "UDPv4")
    monkeypatch.setenv("RMW_IMPLEMENTATION", os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp"))
    views = [img for name, img in load_image_folder(intrinsics_set.folder) if name.startswith("view_")]
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("fake_camera", context=ctx)
    pub = node.create_publisher(Image, "/camera/image_raw", 10)
    stop = threading.Event()

    def publish() -> None:
        # A camera driver: 20 Hz, cycling through the views (the "board moves" between grabs).
        i = 0
        while not stop.is_set():
            img = views[i % len(views)]
            msg = Image(height=img.shape[0], width=img.shape[1], encoding="mono8", step=img.shape[1])
            msg.data = img.tobytes()
            pub.publish(msg)
            i += 1
            time.sleep(0.05)

    thread = threading.Thread(target=publish, daemon=True)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    thread.start()
    try:
        grabbed = grab_ros_images("/camera/image_raw", 9, period_s=0.2, timeout_s=30.0)
    finally:
        stop.set()
        thread.join()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    assert len(grabbed) == 9 and grabbed[0][1].shape == views[0].shape
    assert any(np.array_equal(grabbed[0][1], v) for v in views)  # pixels arrive unchanged
    res = calibrate_camera(grabbed, CameraCalibConfig(board=intrinsics_set.board), "/camera/image_raw")
    assert abs(res.intrinsics.intrinsic_matrix[0, 0] / intrinsics_set.cam.fx - 1) < 0.01


def test_log_from_the_project_recorder(leg_log_csv, tmp_path) -> None:
    """A joint log written the way `s2r deploy --record` writes it (CDR messages, rosbag2 schemas) reads back."""
    import sys
    from pathlib import Path

    from rclpy.serialization import serialize_message
    from s2r.calibration.logs import read_log
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "ros_ws" / "src" / "s2r_ros"))
    from s2r_ros.mcap_log import McapLog

    log = read_log(leg_log_csv).window(end=0.5)
    path = tmp_path / "robot_log.mcap"
    with McapLog(path) as rec:
        cs = rec.add_topic("/joint_states", "sensor_msgs/msg/JointState")
        cc = rec.add_topic("/forward_position_controller/commands", "std_msgs/msg/Float64MultiArray")
        t0 = 1_700_000_000_000_000_000
        for i, t in enumerate(log.t):
            ns = t0 + round(float(t) * 1e9)
            rec.write(cc, "/forward_position_controller/commands",
                      serialize_message(Float64MultiArray(data=log.target[i].tolist())), ns)
            js = JointState(name=list(log.joints), position=log.q[i].tolist(), velocity=log.qd[i].tolist(),
                            effort=log.tau[i].tolist())
            rec.write(cs, "/joint_states", serialize_message(js), ns + 50_000)  # arrives 50 us later
    back = read_log(path)
    assert back.joints == log.joints and len(back.t) == len(log.t)
    np.testing.assert_allclose(back.target, log.target)
    np.testing.assert_allclose(back.q, log.q)
    np.testing.assert_allclose(back.tau, log.tau)
