"""Reports of an actuator identification: text, a figure of measured vs simulated joints, the output files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from s2r.calibration import plot
from s2r.calibration.schema import (
    actuators_to_dict,
    write_calibration,
)
from s2r.calibration.sysid import PARAMS, SysIdResult


def report_text(r: SysIdResult) -> str:
    """Human-readable summary: identified values against the model's, and the fit error before and after."""
    c = r.calibration
    log = r.log
    lines = [
        "s2r actuator identification",
        f"log          {log.source}: {len(log.joints)} joints, {log.t[-1]:.2f} s at {1 / log.dt:.0f} Hz"
        f"{'' if log.tau is not None else ' (no torque logged)'}",
        f"rig          {c.model} hanging by its base, {len(log.joints)} joints simulated at {1000 * c.timestep_s:.2f} ms",
        f"latency      {1000 * c.latency_s:.2f} ms ({round(c.latency_s / c.timestep_s)} samples; resolution "
        f"{1000 * c.timestep_s:.2f} ms)",
        f"fit error    position RMS {np.degrees(r.before.rms_q):.3f} deg -> {np.degrees(r.after.rms_q):.3f} deg"
        + (f"; torque RMS {r.before.rms_tau:.3f} Nm -> {r.after.rms_tau:.3f} Nm" if r.after.rms_tau is not None else ""),
        "             (before: the model's values and no latency; after: the identified values)",
        f"time         {r.seconds:.2f} s (" + ", ".join(f"{k} {v:.2f} s" for k, v in r.stage_seconds.items())
        + f"; {r.iterations} refinement iterations)",
    ]
    lines += [f"note         {n}" for n in r.notes]
    lines += ["", f"{'group':10s} {'param':13s} {'model':>10s} {'identified':>11s} {'change':>8s}"]
    for g in c.groups:
        for p in PARAMS:
            nom = r.nominal[g.name][p]
            val = getattr(g, p)
            ch = f"{100 * (val / nom - 1):+7.1f}%" if nom > 0 else ""
            lines.append(f"{g.name:10s} {p:13s} {nom:10.5g} {val:11.5g} {ch:>8s}")
    lines += ["", f"{'joint':18s} {'group':10s} {'q rms before':>12s} {'after':>9s} (deg)"
              + ("   tau rms before    after (Nm)" if r.after.rms_tau_nm is not None else "")]
    for j, name in enumerate(log.joints):
        before, after = np.degrees(r.before.rms_q_rad[j]), np.degrees(r.after.rms_q_rad[j])
        s = f"{name:18s} {r.group_of_joint[j]:10s} {before:12.4f} {after:9.4f}"
        if r.after.rms_tau_nm is not None and r.before.rms_tau_nm is not None:
            s += f"   {r.before.rms_tau_nm[j]:14.4f} {r.after.rms_tau_nm[j]:8.4f}"
        lines.append(s)
    lines += ["", "Use in sim: set `randomization.calibration` of a task to this file (e.g. "
              "`s2r train Go1-Velocity-Flat --set randomization.calibration=<this .yaml>`)."]
    return "\n".join(lines) + "\n"


def report_figure(r: SysIdResult, max_joints: int = 6) -> np.ndarray:
    """Log against the rig's replay with the model's values and with the identified ones, per joint."""
    log = r.log
    panels = []
    # A window of the log keeps individual oscillations readable; the full log is in the CSV/MCAP.
    n = len(log.t)
    for j, name in enumerate(log.joints[:max_joints]):
        p = plot.Panel(f"{name}: position", "s", "rad")
        p.add("log", log.t, log.q[:, j], color=(0, 0, 0), thickness=2)
        p.add("sim, model values", log.t, r.q_before[:, j], color=1)
        p.add("sim, identified", log.t, r.q_after[:, j], color=0)
        panels.append(p)
        if log.tau is not None:
            s = slice(n // 3, n // 3 + max(50, n // 10))
            p = plot.Panel(f"{name}: torque (zoom)", "s", "Nm")
            p.add("log", log.t[s], log.tau[s, j], color=(0, 0, 0), thickness=2)
            p.add("sim, model values", log.t[s], r.tau_before[s, j], color=1)
            p.add("sim, identified", log.t[s], r.tau_after[s, j], color=0)
            panels.append(p)
    return plot.figure(panels, cols=2)


def write_actuator_outputs(r: SysIdResult, out: str | Path) -> dict[str, Path]:
    """Write the calibration YAML, the text report (.txt) and the log-vs-sim figure (.png) side by side."""
    out = Path(out)
    rep = {"rms_q_rad_before": r.before.rms_q, "rms_q_rad_after": r.after.rms_q,
           "rms_tau_nm_before": r.before.rms_tau, "rms_tau_nm_after": r.after.rms_tau,
           "seconds": r.seconds, "notes": list(r.notes), "joints": list(r.log.joints)}
    y = write_calibration(out, "actuators", actuators_to_dict(r.calibration), source=r.log.source, report=rep)
    txt = out.with_suffix(".txt")
    txt.write_text(report_text(r))
    png = plot.save_png(out.with_suffix(".png"), report_figure(r))
    return {"yaml": y, "report": txt, "figure": png}
