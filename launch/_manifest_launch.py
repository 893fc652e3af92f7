"""Shared body of the launch files: a manifest's node list as launch_ros actions (needs a ROS 2 install).

Every `ros2 launch ... key:=value` argument is declared from the manifest, and the nodes come from
`s2r_ros.manifest.node_list`, the same function `s2r deploy` uses, so both start the same nodes.
"""

from pathlib import Path

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from s2r_ros.manifest import load_manifest, node_list

from launch import LaunchContext, LaunchDescription


def describe(manifest_path: Path) -> LaunchDescription:
    """Launch description for one manifest."""
    manifest = load_manifest(manifest_path)

    def nodes(context: LaunchContext) -> list:
        given = {name: LaunchConfiguration(name).perform(context) for name in manifest.arguments
                 if LaunchConfiguration(name).perform(context) != ""}
        actions = []
        for n in node_list(manifest, given):
            cls = LifecycleNode if n.lifecycle else Node
            actions.append(cls(package=n.package, executable=n.executable, name=n.name, namespace=n.namespace,
                               parameters=[n.parameters], output="screen", emulate_tty=True))
        return actions

    args = [DeclareLaunchArgument(a.name, default_value="", description=a.help) for a in manifest.arguments.values()]
    return LaunchDescription([*args, OpaqueFunction(function=nodes)])
