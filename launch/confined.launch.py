"""ros2 launch launch/confined.launch.py map_file:=maps/tunnel.npz  -- nodes from launch/confined.yaml."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _manifest_launch import describe


def generate_launch_description():
    return describe(Path(__file__).resolve().parent / "confined.yaml")
