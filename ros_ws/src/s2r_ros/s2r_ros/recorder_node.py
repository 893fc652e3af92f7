"""recorder_node: records topics to an MCAP file with the ROS 2 message encoding (what `s2r deploy --record` runs).

Messages are taken serialized (no decode/encode round trip) and written with their complete .msg
definitions, as rosbag2's MCAP storage does. Topics are subscribed once a publisher appears in the graph; a topic
is subscribed reliably when all its publishers are reliable, best-effort otherwise (as rosbag2 adapts).
"""

from __future__ import annotations

import importlib
import time

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy

from s2r_ros.common import declare_params, qos, run
from s2r_ros.mcap_log import McapLog

PARAMS = {"path": "robot_log.mcap", "topics": ["/joint_states"], "executor": "events"}
# A keep-last reader overwrites what the callback has not taken yet: at lockstep speed (several hundred messages
# a second per topic) a busy machine can put a Python writer that far behind, so the queue is deep.
DEPTH = 2000
DRAIN_QUIET_S, DRAIN_MAX_S = 0.3, 3.0


def message_class(type_name: str) -> type:
    """'pkg/msg/Type' -> the Python message class."""
    pkg, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


class Recorder(Node):
    """Subscribes to the listed topics and writes every message to one MCAP file."""

    def __init__(self) -> None:
        super().__init__("recorder")
        declare_params(self, PARAMS)
        self.log = McapLog(str(self.get_parameter("path").value))
        self._wanted = [str(t) for t in self.get_parameter("topics").value]
        self._subs: dict[str, object] = {}
        self.matched: set[str] = set()
        self.create_timer(0.2, self._discover)
        self._discover()
        self.get_logger().info(f"recording {self._wanted} to {self.log.path}")

    def _discover(self) -> None:
        types = dict(self.get_topic_names_and_types())
        for topic in self._wanted:
            if topic in self._subs or topic not in types:
                continue
            type_name = types[topic][0]
            pubs = self.get_publishers_info_by_topic(topic)
            if not pubs:
                # Seen through a subscriber only (the policy node's /joint_states comes up before the sim): wait
                # for a publisher, whose QoS decides ours; a best-effort reader of a reliable topic loses messages.
                continue
            reliable = all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in pubs)
            channel = self.log.add_topic(topic, type_name)
            self._subs[topic] = self.create_subscription(
                message_class(type_name), topic,
                lambda data, c=channel, t=topic: self.log.write(c, t, data, time.time_ns()),
                qos("reliable" if reliable else "best_effort", DEPTH), raw=True,
                event_callbacks=SubscriptionEventCallbacks(matched=lambda info, t=topic: self._on_matched(t, info)))

    def _on_matched(self, topic: str, info: object) -> None:
        """Log when a topic's messages start to arrive: DDS matches a reader some time after it subscribes, and
        what is published before that is not recorded (an operator, or a test, can wait for this line)."""
        count = int(getattr(info, "current_count", 0))
        if count > 0 and topic not in self.matched:
            self.matched.add(topic)
            self.get_logger().info(f"recording {topic}: matched {count} publisher(s)")

    def drain(self) -> None:
        """Take what already reached the reader's queue: the publishers stop first, but a lagging recorder still
        holds their last messages, and closing at once would drop them."""
        executor = self.executor
        if executor is None:
            return
        start = last_change = time.monotonic()
        seen = before = sum(self.log.counts.values())
        while time.monotonic() - last_change < DRAIN_QUIET_S and time.monotonic() - start < DRAIN_MAX_S:
            executor.spin_once(timeout_sec=0.05)
            now_seen = sum(self.log.counts.values())
            if now_seen != seen:
                seen, last_change = now_seen, time.monotonic()
        taken = seen - before
        if taken:
            self.get_logger().info(f"took {taken} queued messages after the stop request")

    def close(self) -> None:
        """Drain the queues, then finish the file (index and summary) so readers can open it."""
        self.drain()
        self.log.close()
        self.get_logger().info(f"wrote {sum(self.log.counts.values())} messages to {self.log.path}: {self.log.counts}")


def main(args: list[str] | None = None) -> int:
    """Entry point: `recorder_node --ros-args -p path:=run.mcap -p topics:="['/joint_states', '/imu/data']"`."""
    return run(Recorder, args, on_stop=Recorder.close)


if __name__ == "__main__":
    raise SystemExit(main())
