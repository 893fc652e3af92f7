"""recorder_node: records topics to an MCAP file with the ROS 2 message encoding (what `s2r deploy --record` runs).

Messages are taken serialized (no decode/encode round trip) and written with their complete .msg
definitions, as rosbag2's MCAP storage does. Topics are subscribed as they appear in the graph; a topic
is subscribed reliably when all its publishers are reliable, best-effort otherwise (as rosbag2 adapts).
"""

from __future__ import annotations

import importlib
import time

from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy

from s2r_ros.common import declare_params, qos, run
from s2r_ros.mcap_log import McapLog

PARAMS = {"path": "robot_log.mcap", "topics": ["/joint_states"], "executor": "events"}


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
            reliable = pubs and all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in pubs)
            channel = self.log.add_topic(topic, type_name)
            self._subs[topic] = self.create_subscription(
                message_class(type_name), topic,
                lambda data, c=channel, t=topic: self.log.write(c, t, data, time.time_ns()),
                qos("reliable" if reliable else "best_effort", 100), raw=True)

    def close(self) -> None:
        """Finish the file (index and summary) so readers can open it."""
        self.log.close()
        self.get_logger().info(f"wrote {sum(self.log.counts.values())} messages to {self.log.path}: {self.log.counts}")


def main(args: list[str] | None = None) -> int:
    """Entry point: `recorder_node --ros-args -p path:=run.mcap -p topics:="['/joint_states', '/imu/data']"`."""
    return run(Recorder, args, on_stop=Recorder.close)


if __name__ == "__main__":
    raise SystemExit(main())
