"""CPU physics backend: many MuJoCo worlds stepped by native threads.

`mujoco.rollout` keeps a persistent C++ thread pool over a set of `MjData` scratch objects. Each control
step hands it the full physics state of every env plus one control vector per env and gets back the state
after `substeps` physics steps, so the Python interpreter is touched once per control step for the whole
batch, never once per env. PD control is a MuJoCo position actuator, so it runs at physics rate inside
the C step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import mujoco
import numpy as np
from mujoco import rollout

_FULL = mujoco.mjtState.mjSTATE_FULLPHYSICS
# MuJoCo calls a value bad when it is NaN or larger than this (mjMAXVAL); the envs use the same bound.
MAX_VALUE = 1e10


@dataclass(frozen=True, kw_only=True)
class CpuBackendConfig:
    """Threading for the CPU backend.

    Attributes:
        num_threads: Worker threads in the pool; 0 means one per available core.
    """

    num_threads: int = 0


class CpuBackend:
    """Batched MuJoCo stepping for `num_envs` copies of one model.

    Each env owns its own `MjModel` so domain randomisation (friction, masses, gains) can differ per
    env; all copies share one size signature, which is what `mujoco.rollout` needs.

    The authoritative state lives in `self.state` (num_envs, nstate) as numpy; views `qpos`/`qvel` are
    slices of it, so task code reads and writes them directly.
    """

    device = "cpu"

    def __init__(self, model: mujoco.MjModel, num_envs: int, cfg: CpuBackendConfig | None = None) -> None:
        cfg = cfg or CpuBackendConfig()
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
        self._pool = rollout.Rollout(nthread=self.num_threads if self.num_threads > 1 else 0)
        self.nstate = mujoco.mj_stateSize(model, _FULL)
        self.nq, self.nv, self.nu = model.nq, model.nv, model.nu
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

    @property
    def qpos(self) -> np.ndarray:
        """(num_envs, nq) view into the state."""
        return self.state[:, self._q0 : self._q0 + self.nq]

    @property
    def qvel(self) -> np.ndarray:
        """(num_envs, nv) view into the state."""
        return self.state[:, self._v0 : self._v0 + self.nv]

    def step(self, ctrl: np.ndarray, substeps: int, sensor_reduce: str = "last") -> np.ndarray:
        """Advance every env by `substeps` physics steps holding `ctrl` fixed.

        Args:
            ctrl: (num_envs, nu) actuator targets.
            substeps: Physics steps per control step.
            sensor_reduce: "last" keeps sensors of the final substep; "max" keeps the maximum over
                substeps (a touch that happened between control steps still counts).

        Returns:
            (num_envs, nsensordata) sensor readings.
        """
        n = self.num_envs
        if self._out_state is None or self._out_state.shape[1] != substeps:
            self._out_state = np.empty((n, substeps, self.nstate))
            self._out_sensor = np.empty((n, substeps, self.sensordata.shape[1]))
            self._ctrl = np.empty((n, substeps, self.nu))
        # With skip_checks the C side wants one control row per substep (no tiling).
        self._ctrl[:] = ctrl[:, None, :]
        self._pool.rollout(
            self.models,
            self._datas,
            self.state,
            self._ctrl,
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
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def _copy_model(model: mujoco.MjModel) -> mujoco.MjModel:
    import copy

    return copy.copy(model)
