"""ros2 launch launch/confined_sim.launch.py policy:=... map_file:=maps/tunnel.npz  -- nodes from launch/confined_sim.yaml."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _manifest_launch import describe


def generate_launch_description():
    return describe(Path(__file__).resolve().parent / "confined_sim.yaml")
