"""ros2 launch launch/arm.launch.py policy:=runs/Panda-Lift-Cube/<run>/policy.onnx  -- nodes from launch/arm.yaml."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _manifest_launch import describe


def generate_launch_description():
    return describe(Path(__file__).resolve().parent / "arm.yaml")
