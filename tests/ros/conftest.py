"""ROS 2 test setup: real rclpy over Fast DDS, kept on this machine and off other runs' DDS domains.

Every test run gets its own ROS_DOMAIN_ID (from the process id) and discovery limited to localhost; Fast
DDS shared-memory files that this run leaves in /dev/shm are removed at the end.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "ros_ws" / "src" / "s2r_ros"))  # the nodes, as `s2r deploy` runs them


def _domain_block() -> int:
    """Which of ten blocks of 20 DDS domains this process uses.

    A plain run picks by its process id. pytest-xdist workers of one run share their parent's id and are
    numbered, so each takes the block after the previous worker's: two workers never meet on a domain.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        return (os.getppid() + int(worker[2:])) % 10
    return os.getpid() % 10


# Each test gets its own DDS domain (a block of 20 per test process), so endpoints of one test that DDS has
# not forgotten yet can never answer in the next.
_DOMAINS = iter(range(20 + _domain_block() * 20, 40 + _domain_block() * 20))
os.environ["ROS_DOMAIN_ID"] = str(next(_DOMAINS))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

rclpy = pytest.importorskip("rclpy", reason="ROS 2 Python packages missing: pip install -e .[ros]")

from tests.real.conftest import camera_policy, go1_policy, graphs  # noqa: E402, F401 - the same session fixtures


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """rosidl's parser imports lark, which imports deprecated stdlib modules: not ours to fix."""
    here = str(Path(__file__).parent)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.filterwarnings("ignore::DeprecationWarning"))


@pytest.fixture(scope="session", autouse=True)
def _clean_shm() -> Iterator[None]:
    """Remove Fast DDS shared-memory files that no process maps any more, before and after the run.

    This process keeps its own segments mapped until it exits, so what it leaves is removed by the next run.
    """
    from s2r_ros.common import stale_fastdds_shm

    for p in stale_fastdds_shm():
        p.unlink(missing_ok=True)
    yield
    for p in stale_fastdds_shm():
        p.unlink(missing_ok=True)


@dataclass
class Ros:
    """One test's ROS world: an rclpy context on a domain of its own, and the environment for subprocesses."""

    context: object
    domain_id: int
    env: dict[str, str]


@pytest.fixture
def ros() -> Iterator[Ros]:
    """A fresh rclpy context on a fresh domain per test."""
    domain = next(_DOMAINS, None)
    if domain is None:  # more ROS tests than the block holds: reuse, slower discovery clean-up only
        domain = int(os.environ["ROS_DOMAIN_ID"])
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    pythonpath = os.pathsep.join(p for p in (str(REPO / "ros_ws" / "src" / "s2r_ros"), os.environ.get("PYTHONPATH")) if p)
    yield Ros(ctx, domain, {**os.environ, "ROS_DOMAIN_ID": str(domain), "PYTHONPATH": pythonpath})
    ctx.try_shutdown()


class Spinner:
    """Spins nodes on one executor in a background thread (callbacks run there)."""

    def __init__(self, context: object, *nodes: object) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=context)
        for n in nodes:
            self.executor.add_node(n)
        self._stop = False
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self._stop:
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # context shut down under us at teardown
                if self._stop:
                    return
                raise

    def close(self) -> None:
        self._stop = True
        self.thread.join(timeout=5)
        self.executor.shutdown()


def wait_for(cond: Callable[[], object], timeout: float, what: str) -> object:
    """Poll until cond() is truthy; fail naming `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
