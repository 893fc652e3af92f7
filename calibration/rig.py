"""The identification test rig: the robot model with its base welded in the air, stepped in MuJoCo.

`build_rig` writes the rig model (only the logged legs' joints free); `RigSim` replays logged targets on it
with a set of candidate parameters per joint group. `s2r.calibration.sysid` fits those parameters.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import mujoco
import numpy as np
from mujoco import rollout
from s2r.calibration.logs import JointLog
from s2r.calibration.schema import (
    CalibrationError,
)

PARAMS = ("kp", "kv", "frictionloss", "damping", "armature")

if TYPE_CHECKING:
    from s2r.calibration.sysid import SysIdConfig

_FULL = mujoco.mjtState.mjSTATE_FULLPHYSICS


def build_rig(model: str, joints: tuple[str, ...], base_body: str, timestep: float,
              integrator: str = "RK4") -> mujoco.MjModel:
    """The robot on a stand: base welded to the world, no contacts, only the limbs that hold logged joints.

    Args:
        model: Model file in s2r.sim.models.
        joints: Logged joints.
        base_body: Body to weld (its free joint is removed).
        timestep: Physics step.
        integrator: MuJoCo integrator name ("RK4", "implicitfast", "Euler", "implicit").
    """
    from s2r.sim.models import model_path

    try:
        spec = mujoco.MjSpec.from_file(str(model_path(model)))
    except FileNotFoundError as exc:
        raise CalibrationError(str(exc)) from None
    base = spec.body(base_body)
    if base is None:
        raise CalibrationError(f"model {model} has no body '{base_body}' to hang the robot by; set base_body")
    for j in list(base.joints):
        spec.delete(j)  # weld: the stand holds the base still
    for k in list(spec.keys):
        spec.delete(k)  # keyframes would no longer match qpos
    for s in list(spec.sensors):
        spec.delete(s)
    wanted = set(joints)

    def joint_names(body: mujoco.MjsBody) -> set[str]:
        names = {j.name for j in body.joints}
        for child in body.bodies:
            names |= joint_names(child)
        return names

    for child in list(base.bodies):
        if not joint_names(child) & wanted:
            removed = joint_names(child)
            for a in list(spec.actuators):
                if a.target in removed:
                    spec.delete(a)
            spec.delete(child)
    spec.option.timestep = timestep
    try:
        spec.option.integrator = getattr(mujoco.mjtIntegrator, f"mjINT_{integrator.upper()}")
    except AttributeError:
        raise CalibrationError(f"unknown MuJoCo integrator '{integrator}'; use RK4, implicitfast, implicit or Euler") from None
    spec.option.disableflags |= mujoco.mjtDisableBit.mjDSBL_CONTACT  # feet hang free
    # Solve the joint-friction constraints fully: the training model's few solver iterations make friction
    # forces vary unevenly with the parameters, which spoils finite-difference gradients.
    spec.option.iterations = 50
    spec.option.ls_iterations = 50
    m = spec.compile()
    m.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_AUTORESET
    return m


def actuated_joints(model: str) -> list[str]:
    """Names of the joints a model's actuators drive, in actuator order."""
    from s2r.sim.models import model_path

    m = mujoco.MjModel.from_xml_path(str(model_path(model)))
    return [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, m.actuator_trnid[a, 0]) for a in range(m.nu)]


class RigSim:
    """Replays a log's targets on the rig for many parameter sets at once (one thread pool)."""

    def __init__(self, log: JointLog, cfg: SysIdConfig) -> None:
        self.log = log
        self.dt = log.dt
        self.substeps = cfg.substeps
        m = build_rig(cfg.model, log.joints, cfg.base_body, self.dt / cfg.substeps, cfg.integrator)
        self.model = m
        names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, m.actuator_trnid[a, 0]) for a in range(m.nu)]
        missing = [j for j in log.joints if j not in names]
        if missing:
            raise CalibrationError(f"{log.source}: joints {missing} have no actuator in {cfg.model}")
        self.act = np.array([names.index(j) for j in log.joints])  # log column -> actuator
        jid = m.actuator_trnid[self.act, 0]
        self.qadr = m.jnt_qposadr[jid]
        self.dof = m.jnt_dofadr[jid]
        # Actuated joints of the kept limbs that were not logged hold their home targets.
        self.hold = np.zeros(m.nu)
        full = mujoco.MjModel.from_xml_path(str(_model_file(cfg.model)))
        fnames = [mujoco.mj_id2name(full, mujoco.mjtObj.mjOBJ_JOINT, full.actuator_trnid[a, 0]) for a in range(full.nu)]
        home = full.key("home").ctrl if any(full.key(i).name == "home" for i in range(full.nkey)) else np.zeros(full.nu)
        for a, n in enumerate(names):
            self.hold[a] = home[fnames.index(n)]
        self.forcerange = m.actuator_forcerange[self.act].copy()
        self.nstate = mujoco.mj_stateSize(m, _FULL)
        data = mujoco.MjData(m)
        data.qpos[:] = 0.0
        for a in range(m.nu):
            data.qpos[m.jnt_qposadr[m.actuator_trnid[a, 0]]] = self.hold[a]
        data.qpos[self.qadr] = log.q[0]
        data.qvel[:] = 0.0
        if log.qd is not None:
            data.qvel[self.dof] = log.qd[0]
        self.state0 = np.empty(self.nstate)
        mujoco.mj_getState(m, data, self.state0, _FULL)
        nthread = cfg.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
        self.nthread = max(1, nthread)
        self._pool = rollout.Rollout(nthread=self.nthread if self.nthread > 1 else 0)
        self._datas = [mujoco.MjData(m) for _ in range(self.nthread)]

    def close(self) -> None:
        self._pool.close()

    def ctrl(self, latency_steps: int) -> np.ndarray:
        """(n, nu) actuator targets: each logged target acts `latency_steps` samples after it was sent."""
        n = len(self.log.t)
        idx = np.clip(np.arange(n) - latency_steps, 0, n - 1)
        c = np.tile(self.hold, (n, 1))
        c[:, self.act] = self.log.target[idx]
        return c

    def with_params(self, params: dict[str, np.ndarray]) -> mujoco.MjModel:
        """A copy of the rig with per-log-joint values of any of PARAMS."""
        m = _copy(self.model)
        a, d = self.act, self.dof
        if "kp" in params:
            m.actuator_gainprm[a, 0] = params["kp"]
            m.actuator_biasprm[a, 1] = -params["kp"]
        if "kv" in params:
            m.actuator_biasprm[a, 2] = -params["kv"]
        if "frictionloss" in params:
            m.dof_frictionloss[d] = params["frictionloss"]
        if "damping" in params:
            m.dof_damping[d] = params["damping"]
        if "armature" in params:
            m.dof_armature[d] = params["armature"]
            _set_const(m)  # constraint scaling depends on inertia; keep it consistent with the armature
        return m

    def run(self, models: list[mujoco.MjModel], latency_steps: int | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Simulate the log for each model.

        Args:
            models: Rig copies (see `with_params`).
            latency_steps: One latency for all, or one per model.

        Returns:
            q (b, n, j) and torque (b, n, j): sample i is the state at log time t_i and the motor torque then.
        """
        n = len(self.log.t)
        b = len(models)
        s = self.substeps
        lats = [latency_steps] * b if isinstance(latency_steps, int) else list(latency_steps)
        ctrl = np.stack([self.ctrl(d) for d in lats])  # (b, n, nu)
        state = np.empty((b, (n - 1) * s, self.nstate))
        self._pool.rollout(models, self._datas, np.tile(self.state0, (b, 1)), np.repeat(ctrl[:, :-1], s, axis=1),
                           nstep=(n - 1) * s, state=state, sensordata=np.empty((b, (n - 1) * s, 0)))
        state = state[:, s - 1 :: s]  # the state at each log sample time
        nq, nv = self.model.nq, self.model.nv
        qpos = np.concatenate([np.tile(self.state0[1 : 1 + nq], (b, 1, 1)), state[:, :, 1 : 1 + nq]], 1)
        qvel = np.concatenate([np.tile(self.state0[1 + nq : 1 + nq + nv], (b, 1, 1)), state[:, :, 1 + nq : 1 + nq + nv]], 1)
        q = qpos[:, :, self.qadr]
        qd = qvel[:, :, self.dof]
        kp = np.stack([m.actuator_gainprm[self.act, 0] for m in models])[:, None, :]
        kv = np.stack([-m.actuator_biasprm[self.act, 2] for m in models])[:, None, :]
        tau = np.clip(kp * (ctrl[:, :, self.act] - q) - kv * qd, self.forcerange[:, 0], self.forcerange[:, 1])
        return q, tau


def _model_file(model: str) -> Path:
    from s2r.sim.models import model_path

    return model_path(model)


def _copy(m: mujoco.MjModel) -> mujoco.MjModel:
    import copy

    return copy.copy(m)


def _set_const(m: mujoco.MjModel) -> None:
    mujoco.mj_setConst(m, mujoco.MjData(m))


# ---- identification ----------------------------------------------------------------------------------------
