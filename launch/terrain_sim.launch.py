"""ros2 launch launch/terrain_sim.launch.py policy:=... terrain_level:=4 terrain_type:=rough -- nodes from terrain_sim.yaml."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _manifest_launch import describe


def generate_launch_description():
    return describe(Path(__file__).resolve().parent / "terrain_sim.yaml")
