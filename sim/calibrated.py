"""Measured actuator values as the centre of a task's domain randomisation.

One config line, `randomization.calibration: <path to an actuators YAML>` (written by
`s2r calibrate actuators`), makes a task:

- set joint friction (`frictionloss`), viscous damping and armature of every joint its groups name to the
  identified values (the task does not randomise these, so they become fixed, measured values);
- centre `motor_strength` on the identified kp over the model's kp (mean over the joints the file covers),
  keeping the range's width; the identified kv that motor_strength cannot express (it scales kp and kv
  together) is added to joint damping, which acts on motion the same way;
- centre `action_latency_steps` on the identified latency in control steps, keeping its width.

Recentring is idempotent (a centre is set, never shifted), so a config that went through it once, e.g. one
saved in a checkpoint, gives the same ranges when it is applied again.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any

import mujoco
import numpy as np


def apply_actuator_calibration(model: mujoco.MjModel, randomization: Any, control_dt: float) -> Any:
    """Write identified joint values into `model` and return the randomisation config recentred on them.

    Args:
        model: The task's model (changed in place, before any per-env copies are made).
        randomization: The task's RandomizationConfig; its `calibration` field names the YAML.
        control_dt: The task's control period, to express latency in control steps.

    Raises:
        s2r.calibration.schema.CalibrationError (a ValueError): unreadable or invalid file, or groups that name
            none of the model's actuated joints.
    """
    # Only the YAML schema (stdlib + PyYAML + numpy) is needed here, not OpenCV or SciPy.
    from s2r.calibration.schema import CalibrationError, load_calibration

    path = randomization.calibration
    cal = load_calibration(path, "actuators")
    names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, model.actuator_trnid[a, 0]) for a in range(model.nu)]
    kp_ratio = np.full(model.nu, np.nan)
    for g in cal.groups:
        hits = [a for a, n in enumerate(names) if any(fnmatch.fnmatch(n, p) for p in g.joints)]
        if not hits:
            raise CalibrationError(f"{path}: group '{g.name}' ({list(g.joints)}) matches none of the model's actuated joints "
                                   f"{names}; calibrate this robot, or point randomization.calibration at its file")
        for a in hits:
            kp = model.actuator_gainprm[a, 0]
            kv = -model.actuator_biasprm[a, 2]
            kp_ratio[a] = g.kp / kp
            dof = model.jnt_dofadr[model.actuator_trnid[a, 0]]
            model.dof_frictionloss[dof] = g.frictionloss
            model.dof_armature[dof] = g.armature
            model.dof_damping[dof] = max(g.damping + g.kv - kp_ratio[a] * kv, 0.0)
    if np.isnan(kp_ratio).all():
        raise CalibrationError(f"{path}: no group applies to this model")
    mujoco.mj_setConst(model, mujoco.MjData(model))  # armature changes the inertia the solver scales by
    r = randomization
    centre = float(np.nanmean(kp_ratio))
    half = (r.motor_strength[1] - r.motor_strength[0]) / 2
    lo_l, hi_l = r.action_latency_steps
    width = hi_l - lo_l
    c_l = round(cal.latency_s / control_dt)
    start = max(0, c_l - width // 2)
    return dataclasses.replace(r, motor_strength=(centre - half, centre + half), action_latency_steps=(start, start + width))
