"""ROS 2 message definitions (ros2msg text) for writing MCAP bags without a ROS install.

MCAP stores each channel's schema as the message definition text with its dependencies appended; these
are the standard interfaces the project uses (sensor_msgs/JointState, sensor_msgs/Image,
std_msgs/Float64MultiArray), so bags written here open in `ros2 bag`, Foxglove and rosbag2 tools.
"""

from __future__ import annotations

_SEP = "=" * 80
_TIME = "int32 sec\nuint32 nanosec\n"
_HEADER = "builtin_interfaces/Time stamp\nstring frame_id\n"


def _with_deps(body: str, *deps: tuple[str, str]) -> str:
    return body + "".join(f"{_SEP}\nMSG: {name}\n{text}" for name, text in deps)


JOINT_STATE = _with_deps(
    "std_msgs/Header header\nstring[] name\nfloat64[] position\nfloat64[] velocity\nfloat64[] effort\n",
    ("std_msgs/Header", _HEADER), ("builtin_interfaces/Time", _TIME))

IMAGE = _with_deps(
    "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\nuint8 is_bigendian\nuint32 step\nuint8[] data\n",
    ("std_msgs/Header", _HEADER), ("builtin_interfaces/Time", _TIME))

FLOAT64_MULTI_ARRAY = _with_deps(
    "std_msgs/MultiArrayLayout layout\nfloat64[] data\n",
    ("std_msgs/MultiArrayLayout", "std_msgs/MultiArrayDimension[] dim\nuint32 data_offset\n"),
    ("std_msgs/MultiArrayDimension", "string label\nuint32 size\nuint32 stride\n"))


def stamp(ns: int) -> dict[str, int]:
    """builtin_interfaces/Time from integer nanoseconds (floats of epoch seconds lose sub-microsecond detail)."""
    return {"sec": ns // 1_000_000_000, "nanosec": ns % 1_000_000_000}
