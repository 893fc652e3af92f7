"""ros2 launch launch/robot.launch.py policy:=... robot:=launch/robots/go1.yaml  -- nodes from launch/robot.yaml."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _manifest_launch import describe


def generate_launch_description():
    return describe(Path(__file__).resolve().parent / "robot.yaml")
