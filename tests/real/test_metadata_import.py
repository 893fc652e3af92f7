"""`s2r.real.metadata`, the policy contract, loads on a robot computer with nothing but the standard library."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import json, sys
before = set(sys.modules)
import s2r.real, s2r.real.metadata
new = sorted(m for m in set(sys.modules) - before if not m.startswith("s2r"))
forbidden = [m for m in sys.modules if m.split(".")[0] == "torch" or m.split(".")[0] == "mujoco"
             or m.startswith(("s2r.sim", "s2r.policies"))]
print(json.dumps({"forbidden": forbidden, "third_party": [m for m in new if m.split(".")[0] not in
                  sys.stdlib_module_names]}))
"""


def test_metadata_imports_no_training_stack() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["forbidden"] == [], f"s2r.real imported {res['forbidden']}"
    assert res["third_party"] == [], f"s2r.real.metadata needs only the standard library, got {res['third_party']}"
