"""A 10x message flood for 30 s neither grows the policy node's memory nor delays its commands (slow)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from tests.ros.conftest import REPO, Ros


@pytest.mark.slow
def test_flood_memory_and_latency(ros: Ros, go1_policy: Path) -> None:
    spec = importlib.util.spec_from_file_location("ros_flood", REPO / "bench" / "ros_flood.py")
    flood = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(flood)
    os.environ["ROS_DOMAIN_ID"] = str(ros.domain_id)  # the benchmark's own nodes join this test's domain
    res = flood.run(seconds=30.0, baseline=5.0, policy=go1_policy)
    rss, f, b = res["rss_mb"], res["flood"], res["baseline"]
    # Memory: flat through the flood (a growing queue would show between its halves) and after it.
    assert rss["flood_second_half_max"] - rss["flood_first_half_max"] < 5.0, rss
    assert rss["after_end"] - rss["baseline_end"] < 10.0, rss
    # Commands: one per policy period, on time (this machine is shared, so allow scheduling noise).
    assert f["commands"] >= 0.99 * f["grid_states"] and f["missed"] <= 0.01 * f["grid_states"], f
    assert f["p99_ms"] <= max(5.0, 2 * b["p99_ms"]), (b, f)
