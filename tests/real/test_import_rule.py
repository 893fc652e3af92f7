"""s2r.real needs numpy + onnxruntime (+ PyYAML for config files) and nothing else: proven in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.policy_files import GO1_ROBOT

PROBE = r"""
import json, pkgutil, sys
import numpy, onnxruntime, yaml  # the allowed third-party packages and whatever they import
allowed = {m.split(".")[0] for m in sys.modules}
import s2r.real
for mod in pkgutil.iter_modules(s2r.real.__path__):
    __import__(f"s2r.real.{mod.name}")
import numpy as np
from s2r.real.controller import PolicyController
from s2r.real.robot import load_robot_config
from s2r.real.runner import PolicyRunner
from s2r.real.safety import SafetyLayer
robot = load_robot_config(sys.argv[2])
ctl = PolicyController(PolicyRunner(sys.argv[1], robot), SafetyLayer(robot))
ctl.activate(0.0)
ctl.on_imu(np.array([1.0, 0, 0, 0]), np.zeros(3), 0.0, 0.0)
ctl.on_joint_state(np.array([0.0, 0.9, -1.8] * 4), np.zeros(12), 0.0, 0.0)
target = ctl.step(0.0)
top = {m.split(".")[0] for m in sys.modules}
print(json.dumps({"new": sorted(top - allowed - set(sys.stdlib_module_names) - {"s2r"}),
                  "modules": sorted(sys.modules), "target": target.tolist()}))
"""


def test_real_imports_only_numpy_onnxruntime(graphs: dict[str, Path]) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, str(graphs["small"]), str(GO1_ROBOT)],
                         capture_output=True, text=True, check=True, timeout=60)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["new"] == [], f"s2r.real pulled in third-party modules: {res['new']}"
    forbidden = ("torch", "mujoco", "rclpy", "s2r.sim", "s2r.policies", "gymnasium")
    bad = [m for m in res["modules"] if m.split(".")[0] in forbidden or m.startswith(forbidden)]
    assert bad == []
    assert len(res["target"]) == 12
