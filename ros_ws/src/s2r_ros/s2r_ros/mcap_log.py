"""Write ROS 2 topics to MCAP the way rosbag2 does, so Foxglove and `ros2 bag` open the files.

Messages are stored as received (CDR bytes, `message_encoding: cdr`); each channel's schema is the
complete `.msg` definition in the `ros2msg` encoding: the type's own .msg text, then every type it uses,
each after a line of 80 '=' and a `MSG: pkg/msg/Type` line. The .msg files come from the ROS
installation (AMENT_PREFIX_PATH, and this interpreter's prefix where pip-installed ROS wheels put them).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from mcap.writer import CompressionType, Writer

PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
              "int64", "uint64", "string", "wstring"}
_SEPARATOR = "=" * 80


def _prefixes() -> list[Path]:
    paths = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return [*paths, Path(sys.prefix)]


def msg_file(type_name: str) -> Path:
    """The .msg file of 'pkg/msg/Type' (or 'pkg/Type'); raises FileNotFoundError naming where it looked."""
    pkg, name = type_name.split("/")[0], type_name.split("/")[-1]
    for prefix in _prefixes():
        path = prefix / "share" / pkg / "msg" / f"{name}.msg"
        if path.is_file():
            return path
    raise FileNotFoundError(f"no definition of {type_name} under share/{pkg}/msg in {[str(p) for p in _prefixes()]}; "
                            "source the ROS setup file or pip install the message package")


def _field_types(text: str, pkg: str) -> list[str]:
    """Complex field types of a .msg text, as 'pkg/msg/Type' (constants are always primitive)."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        base = re.split(r"[\[<]", line.split()[0], maxsplit=1)[0]
        if base in PRIMITIVES:
            continue
        p, n = (base.split("/")[0], base.split("/")[-1]) if "/" in base else (pkg, base)
        out.append(f"{p}/msg/{n}")
    return out


def message_definition(type_name: str) -> str:
    """The complete ros2msg definition of 'pkg/msg/Type' (dependencies depth-first, each once)."""
    seen: list[str] = []

    def visit(t: str) -> None:
        for dep in _field_types(msg_file(t).read_text(), t.split("/")[0]):
            if dep not in seen:
                seen.append(dep)
                visit(dep)

    visit(type_name)
    parts = [msg_file(type_name).read_text().rstrip("\n")]
    parts += [f"{_SEPARATOR}\nMSG: {d}\n{msg_file(d).read_text().rstrip(chr(10))}" for d in seen]
    return "\n".join(parts) + "\n"


class McapLog:
    """An MCAP file of ROS 2 messages. Use as a context manager or call `close()`.

    Args:
        path: Output file (its folder is created).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._writer = Writer(self._file, compression=CompressionType.ZSTD)
        self._writer.start(profile="ros2", library="s2r_ros")
        self._schemas: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def add_topic(self, topic: str, type_name: str) -> int:
        """Register a topic of type 'pkg/msg/Type'; returns its channel id."""
        if type_name not in self._schemas:
            self._schemas[type_name] = self._writer.register_schema(
                name=type_name, encoding="ros2msg", data=message_definition(type_name).encode())
        self.counts[topic] = 0
        return self._writer.register_channel(topic=topic, message_encoding="cdr", schema_id=self._schemas[type_name])

    def write(self, channel: int, topic: str, data: bytes, log_time_ns: int) -> None:
        """Store one serialized message."""
        self.counts[topic] += 1
        self._writer.add_message(channel_id=channel, log_time=log_time_ns, publish_time=log_time_ns,
                                 data=data, sequence=self.counts[topic])

    def close(self) -> None:
        """Write the summary and index; the file is complete only after this."""
        if not self._file.closed:
            self._writer.finish()
            self._file.close()

    def __enter__(self) -> McapLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
