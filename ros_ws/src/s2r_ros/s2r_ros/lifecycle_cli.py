"""`s2r lifecycle`: list and change managed (lifecycle) nodes' states over their standard services.

What `ros2 lifecycle nodes|get|list|set` does, for machines with rclpy but no `ros2` command (a pip
install): it calls `<node>/get_state`, `<node>/get_available_transitions` and `<node>/change_state`
(lifecycle_msgs GetState, GetAvailableTransitions, ChangeState), so it works with any lifecycle node.

    s2r lifecycle nodes                  # every node that offers lifecycle_msgs/srv/GetState
    s2r lifecycle get /policy            # its current state
    s2r lifecycle list /policy           # the transitions it offers from that state
    s2r lifecycle set /policy activate   # a transition by label (or id)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

GET_STATE_TYPE = "lifecycle_msgs/srv/GetState"


class LifecycleError(RuntimeError):
    """A node, service or transition that is not there, or no answer in time."""


def node_name(name: str) -> str:
    """`policy` -> `/policy`; fully qualified names stay as they are."""
    name = name.strip()
    if not name or name == "/":
        raise LifecycleError("give a node name, e.g. /policy (see `s2r lifecycle nodes`)")
    return name if name.startswith("/") else f"/{name}"


class LifecycleClient:
    """Service clients of one rclpy context, for any number of lifecycle nodes.

    Args:
        context: An initialised rclpy context (its domain is the one searched).
        timeout: Seconds to wait for discovery and for each answer.
    """

    def __init__(self, context: Any, timeout: float = 5.0) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self.timeout = timeout
        self.node = Node(f"s2r_lifecycle_{os.getpid()}", context=context, start_parameter_services=False)
        self._executor = SingleThreadedExecutor(context=context)
        self._executor.add_node(self.node)
        self._clients: dict[tuple[str, str], Any] = {}

    def close(self) -> None:
        """Destroy the node and its executor."""
        self._executor.shutdown()
        self.node.destroy_node()

    def __enter__(self) -> LifecycleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- queries ----------------------------------------------------------------------------------

    def nodes(self, quiet: float = 1.0) -> list[str]:
        """Fully qualified names of the lifecycle nodes discovered (sorted).

        Discovery has no end: this returns once some were found and none was added for `quiet` seconds,
        or after the client's timeout.
        """
        found: set[str] = set()
        now = time.monotonic()
        end, last_new = now + self.timeout, now
        while True:
            self._executor.spin_once(timeout_sec=0.05)
            for name, types in self.node.get_service_names_and_types():
                if name.endswith("/get_state") and GET_STATE_TYPE in types and name[: -len("/get_state")] not in found:
                    found.add(name[: -len("/get_state")])
                    last_new = time.monotonic()
            now = time.monotonic()
            if now >= end or (found and now - last_new >= quiet):
                return sorted(found)

    def state(self, node: str) -> str:
        """The node's current state label, e.g. "inactive"."""
        from lifecycle_msgs.srv import GetState

        return self._call(node, "get_state", GetState, GetState.Request()).current_state.label

    def transitions(self, node: str) -> list[tuple[str, int, str, str]]:
        """(label, id, start state, goal state) of each transition the node offers from its current state."""
        from lifecycle_msgs.srv import GetAvailableTransitions

        res = self._call(node, "get_available_transitions", GetAvailableTransitions, GetAvailableTransitions.Request())
        return [(t.transition.label, t.transition.id, t.start_state.label, t.goal_state.label)
                for t in res.available_transitions]

    def change(self, node: str, transition: str) -> str:
        """Trigger `transition` (a label such as "activate", or its id); returns the node's new state.

        Raises:
            LifecycleError: The node does not offer that transition now (the message lists those it does),
                or the node refused it (its own log says why).
        """
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        offered = self.transitions(node)
        match = [t for t in offered if transition in (t[0], str(t[1]))]
        if not match:
            labels = ", ".join(t[0] for t in offered) or "none"
            raise LifecycleError(f"{node_name(node)} is {self.state(node)} and offers no transition '{transition}'; "
                                 f"it offers: {labels}")
        label, tid = match[0][:2]
        res = self._call(node, "change_state", ChangeState, ChangeState.Request(transition=Transition(id=tid, label=label)))
        now = self.state(node)
        if not res.success:
            raise LifecycleError(f"{node_name(node)} refused '{label}' and is {now} (its log says why)")
        return now

    # ---- calls ------------------------------------------------------------------------------------

    def _call(self, node: str, service: str, srv_type: Any, request: Any) -> Any:
        name = f"{node_name(node)}/{service}"
        key = (name, srv_type.__name__)
        if key not in self._clients:
            self._clients[key] = self.node.create_client(srv_type, name)
        client = self._clients[key]
        end = time.monotonic() + self.timeout
        while not client.service_is_ready():
            if time.monotonic() >= end:
                raise LifecycleError(f"no service {name} within {self.timeout:g} s: is {node_name(node)} running and a "
                                     "lifecycle node? (`s2r lifecycle nodes` lists them; same ROS_DOMAIN_ID?)")
            self._executor.spin_once(timeout_sec=0.05)
        # A request sent just after discovery can go unanswered while the reply path is still being matched:
        # resend once a second, as ROS tools do.
        while time.monotonic() < end:
            future = client.call_async(request)
            resend = min(time.monotonic() + 1.0, end)
            while not future.done() and time.monotonic() < resend:
                self._executor.spin_once(timeout_sec=0.05)
            if future.done():
                return future.result()
            client.remove_pending_request(future)
        raise LifecycleError(f"no answer from {name} within {self.timeout:g} s")


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Sub-commands of `s2r lifecycle` (nodes, get, list, set)."""
    p = p or argparse.ArgumentParser(prog="s2r lifecycle", description=__doc__.splitlines()[0])
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the node and each answer (default 5)")
    sub = p.add_subparsers(dest="lifecycle_command", required=True, metavar="ACTION")
    sub.add_parser("nodes", help="list the lifecycle nodes that answer on this ROS domain")
    g = sub.add_parser("get", help="print a node's current state")
    g.add_argument("node", help="node name, e.g. /policy")
    g = sub.add_parser("list", help="print the transitions a node offers from its current state")
    g.add_argument("node", help="node name, e.g. /policy")
    g = sub.add_parser("set", help="trigger a transition (configure, activate, deactivate, cleanup, shutdown, ...)")
    g.add_argument("node", help="node name, e.g. /policy")
    g.add_argument("transition", help="transition label (e.g. activate) or id")
    return p


def run_lifecycle(args: argparse.Namespace) -> int:
    """Run one `s2r lifecycle` action; returns a process exit code."""
    try:
        import rclpy
    except ImportError:
        print("s2r lifecycle: error: rclpy is not installed: pip install -e .[ros], or source a ROS 2 installation "
              "(then `ros2 lifecycle` works too)", file=sys.stderr)
        return 2
    # `s2r deploy` keeps its nodes' discovery on this computer; look for them the same way unless told otherwise.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with LifecycleClient(context, timeout=args.timeout) as client:
            action = args.lifecycle_command
            if action == "nodes":
                names = client.nodes()
                print("\n".join(names) if names else "no lifecycle nodes found (same ROS_DOMAIN_ID? nodes started?)")
                return 0 if names else 1
            if action == "get":
                print(client.state(args.node))
            elif action == "list":
                for label, tid, start, goal in client.transitions(args.node):
                    print(f"- {label} [{tid}]  {start} -> {goal}")
            else:
                print(f"{node_name(args.node)}: {client.change(args.node, args.transition)}")
    except LifecycleError as exc:
        print(f"s2r lifecycle: error: {exc}", file=sys.stderr)
        return 2
    finally:
        context.try_shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point (`python -m s2r_ros.lifecycle_cli`; same actions as `s2r lifecycle`)."""
    return run_lifecycle(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
