"""Join `bench/confined.py eval` JSONs of the same runs over consecutive held-out map ranges into one evaluation.

An evaluation of maps 0-24 and one of maps 25-99 (`eval --first-map 25 --maps 75`) become one of maps 0-99, per
method and level: episodes are concatenated, rates and means re-weighted by episode counts, outcome counts
added. The result reads like a single `eval` output, so `confined.py summarize` takes it.

    python bench/confined_join.py s0_l1.json s0_l1x.json --out s0_l1_100.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SUMMED = ("fall_at_low_ceiling", "stall_at_low_ceiling", "ceiling_contact_episodes", "under_low_ceiling_episodes")


def join_levels(rows: list[dict]) -> dict:
    """One level's rows (consecutive map ranges, in order) as one row."""
    n = np.array([r["maps"] for r in rows], dtype=float)
    ok = [np.array(r["per_map_success"], dtype=bool) for r in rows]
    times = [(r["time_to_goal_s"], int(o.sum())) for r, o in zip(rows, ok, strict=True) if r["time_to_goal_s"] is not None]
    out = {"level": rows[0]["level"], "maps": int(n.sum()), "seconds": rows[0]["seconds"],
           "success": float(np.concatenate(ok).mean()),
           "fall_rate": float(np.dot(n, [r["fall_rate"] for r in rows]) / n.sum()),
           "time_to_goal_s": float(sum(t * k for t, k in times) / sum(k for _, k in times)) if times else None,
           "mean_progress": float(np.dot(n, [r["mean_progress"] for r in rows]) / n.sum()),
           "per_map_success": [int(v) for o in ok for v in o]}
    outs = [r.get("outcomes") for r in rows]
    if all(outs):
        o = {"counts": {c: sum(x["counts"][c] for x in outs) for c in outs[0]["counts"]}}
        o.update({k: sum(x[k] for x in outs) for k in SUMMED})
        o["ceiling_contact_s_mean"] = float(np.dot(n, [x["ceiling_contact_s_mean"] for x in outs]) / n.sum())
        o["min_height_under_low_ceiling_m"] = [v for x in outs for v in x["min_height_under_low_ceiling_m"]]
        o["per_episode"] = [v for x in outs for v in x["per_episode"]]
        out["outcomes"] = o
    return out


def join(parts: list[dict]) -> dict:
    """Eval JSONs over consecutive map ranges (same methods and levels) as one over their union."""
    parts = sorted(parts, key=lambda p: p.get("first_map", 0))
    at = parts[0].get("first_map", 0)
    for p in parts:
        if p.get("first_map", 0) != at:
            raise ValueError(f"map ranges do not join: one starts at map {p.get('first_map', 0)}, expected {at} "
                             "(pass evaluations of consecutive ranges, e.g. --maps 25 then --first-map 25)")
        at += p["maps_per_level"]
    methods = set(parts[0]["methods"])
    if any(set(p["methods"]) != methods or p["levels"] != parts[0]["levels"] for p in parts):
        raise ValueError("the evaluations to join must hold the same methods and levels")
    res = {**parts[0], "maps_per_level": sum(p["maps_per_level"] for p in parts), "joined_from": len(parts)}
    res["methods"] = {}
    for m in sorted(methods):
        rows = [p["methods"][m] for p in parts]
        res["methods"][m] = {"task": rows[0]["task"], "train": rows[0].get("train", {}),
                             "levels": [join_levels([r["levels"][i] for r in rows]) for i in range(len(res["levels"]))],
                             "eval_wall_s": sum(r.get("eval_wall_s", 0.0) for r in rows)}
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", type=Path, nargs="+")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    a.out.write_text(json.dumps(join([json.loads(x.read_text()) for x in a.inputs]), indent=2))


if __name__ == "__main__":
    main()
