"""The MCAP recorder node over real DDS: a topic first seen through a subscriber waits for its publisher, whose
QoS the recorder takes, and then every message of a reliable topic is written."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from rclpy.qos import ReliabilityPolicy
from s2r_ros.common import qos
from std_msgs.msg import Int32

from tests.ros.conftest import Ros, Spinner, wait_for

TOPIC = "/recorder_test"


def recorder_subs(node: object) -> list:
    return [i for i in node.get_subscriptions_info_by_topic(TOPIC) if i.node_name == "recorder"]


def test_a_topic_seen_only_through_a_subscriber_is_recorded_reliably_once_published(ros: Ros, tmp_path: Path) -> None:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    from rclpy.node import Node

    node = Node("recorder_test", context=ros.context)
    node.create_subscription(Int32, TOPIC, lambda m: None, qos("reliable", 10))  # the topic exists, unpublished
    spinner = Spinner(ros.context, node)
    path, log = tmp_path / "run.mcap", tmp_path / "recorder.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "s2r_ros.recorder_node", "--ros-args", "-p", f"path:={path}",
                                 "-p", f"topics:=['{TOPIC}']"], env=ros.env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "recording ['" in log.read_text(), 30, "the recorder to start")
        time.sleep(1.0)  # five discovery ticks with the topic in the graph and no publisher
        assert recorder_subs(node) == [], "the recorder subscribed before any publisher, so with a guessed QoS"
        pub = node.create_publisher(Int32, TOPIC, qos("reliable", 1000))
        wait_for(lambda: f"recording {TOPIC}: matched" in log.read_text(), 30, "the recorder to match the publisher")
        # The recorder logs its match when it has created the subscription; this node learns of it by discovery a
        # moment later (CI once read the graph in between and found none).
        wait_for(lambda: recorder_subs(node), 10, "the recorder's subscription to reach this node's graph")
        (sub,) = recorder_subs(node)
        assert sub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        for k in range(300):  # as fast as Python publishes: a best-effort reader would drop some under load
            pub.publish(Int32(data=k))
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        spinner.close()
        node.destroy_node()
    assert code == 0, log.read_text()
    with path.open("rb") as f:
        got = [m.data for _, _, _, m in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages()]
    assert got == list(range(300)), f"{len(got)} of 300 recorded"
