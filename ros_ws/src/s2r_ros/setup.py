"""ament_python package of the s2r robot-side ROS 2 nodes (built with `colcon build`)."""

from setuptools import setup

PACKAGE = "s2r_ros"
NODES = ("policy_node", "sim_bridge_node", "teleop_node", "recorder_node", "planner_node", "arm_policy_node",
         "arm_sim_bridge_node", "hil_actor_node", "confined_planner_node")

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="s2r",
    maintainer_email="s2r@example.com",
    description="s2r robot side: ONNX policy lifecycle node, MuJoCo sim bridge, teleop, MCAP recorder, quadrotor planner.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{n} = {PACKAGE}.{n}:main" for n in NODES]
        + ["s2r_deploy = s2r_ros.deploy:main"],
    },
)
