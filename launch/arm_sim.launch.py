"""ros2 launch launch/arm_sim.launch.py policy:=runs/Panda-Lift-Cube/<run>/policy.onnx  -- nodes from launch/arm_sim.yaml."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _manifest_launch import describe


def generate_launch_description():
    return describe(Path(__file__).resolve().parent / "arm_sim.yaml")
