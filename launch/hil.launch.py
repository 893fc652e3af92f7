"""ros2 launch launch/hil.launch.py policy:=<run>/policy.onnx learner:=HOST:PORT  -- nodes from launch/hil_sim.yaml."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _manifest_launch import describe


def generate_launch_description():
    return describe(Path(__file__).resolve().parent / "hil_sim.yaml")
