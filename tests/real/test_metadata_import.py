"""`s2r.real.metadata`, the policy contract, loads (and converts a v1 file) with nothing but the standard library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import json, sys
before = set(sys.modules)
import s2r.real, s2r.real.metadata, s2r.real.metadata_v1
meta = s2r.real.metadata.load_metadata(sys.argv[1])  # a v1 file: the converter runs too
assert meta.schema_version == 2 and meta.action.kind == "joint_position"
new = sorted(m for m in set(sys.modules) - before if not m.startswith("s2r"))
forbidden = [m for m in sys.modules if m.split(".")[0] == "torch" or m.split(".")[0] == "mujoco"
             or m.startswith(("s2r.sim", "s2r.policies"))]
print(json.dumps({"forbidden": forbidden, "third_party": [m for m in new if m.split(".")[0] not in
                  sys.stdlib_module_names]}))
"""


def test_metadata_imports_no_training_stack() -> None:
    walk = Path(__file__).resolve().parents[1] / "data" / "go1_walk" / "policy.json"
    out = subprocess.run([sys.executable, "-c", PROBE, str(walk)], capture_output=True, text=True, check=True, timeout=60)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["forbidden"] == [], f"s2r.real imported {res['forbidden']}"
    assert res["third_party"] == [], f"s2r.real.metadata needs only the standard library, got {res['third_party']}"
