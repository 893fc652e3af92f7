"""ros2 launch launch/quadrotor.launch.py policy:=runs/Crazyflie-Replan-Waypoints/<run>  -- nodes from launch/quadrotor.yaml."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _manifest_launch import describe


def generate_launch_description():
    return describe(Path(__file__).resolve().parent / "quadrotor.yaml")
