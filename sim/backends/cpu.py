"""CPU physics backend: many MuJoCo worlds stepped by native threads.

`mujoco.rollout` keeps a persistent C++ thread pool over a set of `MjData` scratch objects. Each control
step hands it the full physics state of every env plus one control vector per env and gets back the state
after `substeps` physics steps, so the Python interpreter is touched once per control step for the whole
batch, never once per env. PD control is a MuJoCo position actuator, so it runs at physics rate inside
the C step. Applied body forces (`xfrc_applied`) ride along in the same control vector when a step asks
for them (`mujoco.rollout`'s control spec CTRL | XFRC_APPLIED).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

import mujoco
import numpy as np
from mujoco import rollout
from s2r.sim.backends import BackendConfig, FieldRandomization, check_fields, draw_names

_FULL = mujoco.mjtState.mjSTATE_FULLPHYSICS
_CTRL_XFRC = mujoco.mjtState.mjSTATE_CTRL | mujoco.mjtState.mjSTATE_XFRC_APPLIED
# MuJoCo calls a value bad when it is NaN or larger than this (mjMAXVAL); the envs use the same bound.
MAX_VALUE = 1e10


CpuBackendConfig = BackendConfig  # the old name, kept for existing imports


class CpuBackend:
    """Batched MuJoCo stepping for `num_envs` copies of one model.

    Each env owns its own `MjModel` so domain randomisation (friction, masses, gains) can differ per
    env; all copies share one size signature, which is what `mujoco.rollout` needs.

    The authoritative state lives in `self.state` (num_envs, nstate) as numpy; views `qpos`/`qvel` are
    slices of it, so task code reads and writes them directly.
    """

    device = "cpu"

    def __init__(self, model: mujoco.MjModel, num_envs: int, cfg: BackendConfig | None = None) -> None:
        cfg = cfg or BackendConfig()
        self.base_model = model
        self.num_envs = num_envs
        self.models = [_copy_model(model) for _ in range(num_envs)]
        for m in self.models:
            # Left on, MuJoCo silently resets a world whose state went bad to the model's default pose in
            # the middle of a control step, so the env could neither see nor count it. Off, the bad values
            # reach `self.state`, where `diverged()` finds them and the task resets that env properly.
            m.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_AUTORESET
        nthread = cfg.num_threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
        self.num_threads = max(1, min(nthread, num_envs))
        self._datas = [mujoco.MjData(model) for _ in range(self.num_threads)]
        self._rollout = rollout.Rollout(nthread=self.num_threads if self.num_threads > 1 else 0)
        self.nstate = mujoco.mj_stateSize(model, _FULL)
        self.nq, self.nv, self.nu, self.nbody = model.nq, model.nv, model.nu, model.nbody
        # Offsets inside the FULLPHYSICS state vector: [time, qpos, qvel, act, ...].
        self._q0 = 1
        self._v0 = 1 + model.nq
        data = mujoco.MjData(model)
        state0 = np.empty(self.nstate)
        mujoco.mj_getState(model, data, state0, _FULL)
        self.state = np.tile(state0, (num_envs, 1))  # (num_envs, nstate)
        self.sensordata = np.zeros((num_envs, model.nsensordata))  # after the last substep
        self._out_state: np.ndarray | None = None
        self._out_sensor: np.ndarray | None = None
        self._chunk = max(1, num_envs // (self.num_threads * 4))
        self._xfrc_ctrl: np.ndarray | None = None
        self._nominal: dict[FieldRandomization, tuple[tuple, np.ndarray]] = {}
        self._pool: list[mujoco.MjModel] = []

    @property
    def qpos(self) -> np.ndarray:
        """(num_envs, nq) view into the state."""
        return self.state[:, self._q0 : self._q0 + self.nq]

    @property
    def qvel(self) -> np.ndarray:
        """(num_envs, nv) view into the state."""
        return self.state[:, self._v0 : self._v0 + self.nv]

    def step(self, ctrl: np.ndarray, substeps: int, sensor_reduce: str = "last",
             xfrc_applied: np.ndarray | None = None) -> np.ndarray:
        """Advance every env by `substeps` physics steps holding `ctrl` fixed.

        Args:
            ctrl: (num_envs, nu) actuator targets.
            substeps: Physics steps per control step.
            sensor_reduce: "last" keeps sensors of the final substep; "max" keeps the maximum over
                substeps (a touch that happened between control steps still counts).
            xfrc_applied: (num_envs, nbody, 6) world-frame force (3) and torque (3) at each body's centre
                of mass, held for these substeps; None applies none.

        Returns:
            (num_envs, nsensordata) sensor readings.
        """
        n = self.num_envs
        if self._out_state is None or self._out_state.shape[1] != substeps:
            self._out_state = np.empty((n, substeps, self.nstate))
            self._out_sensor = np.empty((n, substeps, self.sensordata.shape[1]))
            self._ctrl = np.empty((n, substeps, self.nu))
            self._xfrc_ctrl = None
        if xfrc_applied is None:
            # With skip_checks the C side wants one control row per substep (no tiling).
            self._ctrl[:] = ctrl[:, None, :]
            control, spec = self._ctrl, mujoco.mjtState.mjSTATE_CTRL
        else:
            xfrc = np.asarray(xfrc_applied, dtype=np.float64)
            if xfrc.shape != (n, self.nbody, 6):
                raise ValueError(f"xfrc_applied has shape {xfrc.shape}; this backend takes ({n}, {self.nbody}, 6) "
                                 "(num_envs, nbody, force and torque)")
            if self._xfrc_ctrl is None:
                self._xfrc_ctrl = np.empty((n, substeps, self.nu + 6 * self.nbody))
            # The control vector follows mjtState's bit order: ctrl, then xfrc_applied.
            self._xfrc_ctrl[:, :, : self.nu] = ctrl[:, None, :]
            self._xfrc_ctrl[:, :, self.nu :] = xfrc.reshape(n, 1, -1)
            control, spec = self._xfrc_ctrl, _CTRL_XFRC
        self._rollout.rollout(
            self.models,
            self._datas,
            self.state,
            control,
            control_spec=spec,
            skip_checks=True,
            nstep=substeps,
            state=self._out_state,
            sensordata=self._out_sensor,
            chunk_size=self._chunk,
        )
        self.state[:] = self._out_state[:, -1]
        if sensor_reduce == "max":
            np.max(self._out_sensor, axis=1, out=self.sensordata)
        else:
            self.sensordata[:] = self._out_sensor[:, -1]
        return self.sensordata

    @property
    def sensor_max(self) -> np.ndarray:
        """(num_envs, nsensordata) largest reading of each sensor over the last step's substeps."""
        if self._out_sensor is None:  # no step yet
            return self.sensordata.copy()
        return self._out_sensor.max(axis=1)

    def randomize(self, env_ids: np.ndarray, fields: Sequence[FieldRandomization], values: np.ndarray) -> None:
        """Write drawn values into each env's own model, relative to the nominal (base model) values.

        Args:
            env_ids: (k,) envs to randomise.
            fields: What to write (see `FieldRandomization`).
            values: (k, n_draws) one column per draw name, in `draw_names(fields)` order.
        """
        self._write(self.models, env_ids, fields, values)

    def set_model_pool(self, fields: Sequence[FieldRandomization], values: np.ndarray) -> None:
        """Build len(values) models randomised once from the nominal model (row j from values[j])."""
        self._pool = [copy.copy(self.base_model) for _ in range(len(values))]
        self._write(self._pool, np.arange(len(values)), fields, values)

    def use_pool(self, env_ids: np.ndarray, picks: np.ndarray) -> None:
        """Env env_ids[j] steps pool model picks[j] (shared, not copied: fewer models stay warm in cache)."""
        for i, b in zip(env_ids, picks, strict=True):
            self.models[i] = self._pool[b]

    def _write(self, models: list[mujoco.MjModel], env_ids: np.ndarray, fields: Sequence[FieldRandomization],
               values: np.ndarray) -> None:
        cols = {name: j for j, name in enumerate(draw_names(fields))}
        plan = []
        for f in fields:
            if f not in self._nominal:
                check_fields(self.base_model, [f])
                self._nominal[f] = _nominal(self.base_model, f)
            index, x0 = self._nominal[f]
            v = values[:, cols[f.draw_name]].reshape((-1,) + (1,) * x0.ndim)  # (k, 1, ...) against x0
            new = x0 * v if f.op == "scale" else x0 + v if f.op == "add" else np.broadcast_to(v, (len(v), *x0.shape))
            plan.append((f.field, index, new))
        for j, i in enumerate(env_ids):
            m = models[i]
            for name, index, new in plan:
                getattr(m, name)[index] = new[j]

    def diverged(self) -> np.ndarray:
        """(num_envs,) bool: worlds whose state holds NaN, inf or a value beyond MAX_VALUE."""
        return ~(np.abs(self.state) < MAX_VALUE).all(axis=1)

    def forward_sensors(self, env_ids: np.ndarray) -> None:
        """Recompute sensors for `env_ids` from their current state (after a reset)."""
        data = self._datas[0]
        for i in env_ids:
            mujoco.mj_setState(self.models[i], data, self.state[i], _FULL)
            mujoco.mj_forward(self.models[i], data)
            self.sensordata[i] = data.sensordata

    def close(self) -> None:
        """Stop the worker threads."""
        if self._rollout is not None:
            self._rollout.close()
            self._rollout = None


def _copy_model(model: mujoco.MjModel) -> mujoco.MjModel:
    return copy.copy(model)


def _nominal(model: mujoco.MjModel, f: FieldRandomization) -> tuple[tuple, np.ndarray]:
    """The numpy index of a field's selected entries and a copy of their nominal values."""
    arr = getattr(model, f.field)
    rows = slice(None) if f.rows is None else np.asarray(f.rows)
    if arr.ndim == 1:
        index: tuple = (rows,)
    else:
        cols = slice(None) if f.cols is None else np.asarray(f.cols)
        index = np.ix_(f.rows, f.cols) if f.rows is not None and f.cols is not None else (rows, cols)
    return index, arr[index].copy()
