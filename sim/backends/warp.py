"""MuJoCo Warp backend: every world in one batched `mujoco_warp` data, on a GPU or (slowly) on the CPU.

The same MJCF, tasks, rewards and field randomisation as the CPU backend, behind the same `Backend`
protocol. What differs lives here:

- State: `mujoco_warp.put_data(nworld=num_envs)` holds every world; a control step writes the controls (and
  any applied body forces), runs `substeps` of `mujoco_warp.step` - on CUDA captured once as a graph and
  replayed, which is where the GPU speed comes from - and reads back the state and sensors. For the numpy
  task code `state`/`sensordata` are host arrays (the layout of the CPU backend) and a control step copies
  them once each way. The device-resident task (`warp_env.py`) skips that: it reads and writes Warp's
  arrays through `torch_view` and steps with `step_device`.
- Randomisation: a randomised model field becomes one row per world (`(nworld, *shape)` in place of the
  shared `(1, *shape)` array, as `put_model(batch_sizes=...)` would make it), and drawn values go into the
  rows of the worlds being reset. A model pool is the same rows, copied from the pool's draws.
- Solver sizes: contacts and constraint rows are preallocated per world (`nconmax`, `njmax` in
  `BackendConfig`; 0 lets mujoco_warp size them from the model). A world that needs more is reported by
  mujoco_warp; the task sees it as divergence only if the state goes bad.

Warp also runs on the CPU (kernels compile on first use, then come from Warp's cache), which is how the
parity test against the CPU backend runs without a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mujoco
import numpy as np
from s2r.sim.backends import BackendConfig, FieldRandomization, check_fields, draw_names

MAX_VALUE = 1e10
_BITS = (mujoco.mjtState.mjSTATE_TIME, mujoco.mjtState.mjSTATE_QPOS, mujoco.mjtState.mjSTATE_QVEL,
         mujoco.mjtState.mjSTATE_ACT)


class WarpBackend:
    """Batched MuJoCo Warp stepping of `num_envs` worlds of one model."""

    def __init__(self, model: mujoco.MjModel, num_envs: int, cfg: BackendConfig | None = None) -> None:
        try:
            import mujoco_warp as mjw
            import warp as wp
        except ImportError:
            raise ImportError("backend 'warp' needs MuJoCo Warp: pip install -e '.[gpu]' (mujoco-warp, warp-lang)") from None
        cfg = cfg or BackendConfig(name="warp")
        self._wp, self._mjw = wp, mjw
        wp.config.quiet = True
        wp.init()
        self.device = cfg.device or ("cuda:0" if wp.is_cuda_available() else "cpu")
        known = [d.alias for d in wp.get_devices()]
        if self.device not in known:
            raise ValueError(f"backend.device '{self.device}' is not a device Warp sees here ({', '.join(known)}); "
                             "pass --device with one of them")
        if self.device == "cpu":
            # On the CPU Warp only serves parity tests, where compiling the kernels is most of the cost:
            # no backward passes, -O0 and no aggressive inlining cut the CPU time of
            # tests/sim/test_warp_backend.py on a fresh kernel cache from 76 s to 42 s, same results.
            # These are process-wide: a process that also steps GPU worlds should create those first.
            wp.config.enable_backward = False
            wp.config.optimization_level = 0
            wp.config.cpu_compiler_flags = ""
        self.num_envs = num_envs
        self.base_model = model
        self.models: list[mujoco.MjModel] = []  # per-world fields live on the device (see module doc)
        self.nq, self.nv, self.nu, self.na, self.nbody = model.nq, model.nv, model.nu, model.na, model.nbody
        data = mujoco.MjData(model)
        mujoco.mj_forward(model, data)
        with wp.ScopedDevice(self.device):
            self._m = mjw.put_model(model)
            self._d = mjw.put_data(model, data, nworld=num_envs, nconmax=cfg.nconmax or None, njmax=cfg.njmax or None)
        # Host state in the CPU backend's FULLPHYSICS layout, so task code reads and writes it the same way.
        full = mujoco.mjtState.mjSTATE_FULLPHYSICS
        self.nstate = mujoco.mj_stateSize(model, full)
        state0 = np.empty(self.nstate)
        mujoco.mj_getState(model, data, state0, full)
        self.state = np.tile(state0, (num_envs, 1))
        self._off = {}
        at = 0
        bits = sorted((int(v), v) for k, v in mujoco.mjtState.__members__.items() if k != "mjNSTATE")
        for value, bit in bits:  # FULLPHYSICS components in bit order, as mj_getState lays them out
            if value & int(full) and bin(value).count("1") == 1:
                size = mujoco.mj_stateSize(model, bit)
                self._off[int(bit)] = (at, at + size)
                at += size
        if at != self.nstate:
            raise RuntimeError(f"MuJoCo's FULLPHYSICS state layout changed ({at} != {self.nstate}); update WarpBackend")
        self.sensordata = np.zeros((num_envs, model.nsensordata))
        self.sensor_max = np.zeros((num_envs, model.nsensordata))
        with wp.ScopedDevice(self.device):
            self._max = wp.zeros((num_envs, model.nsensordata), dtype=float)
        self._max_kernel = _max_kernel(wp)
        self._use_graph = cfg.graph and self.device.startswith("cuda")
        self._graphs: dict[int, object] = {}
        self._nominal: dict[FieldRandomization, np.ndarray] = {}
        self._pool: tuple[Sequence[FieldRandomization], np.ndarray] | None = None

    # ---- state views -----------------------------------------------------------------------------------------------

    def _slice(self, bit: mujoco.mjtState) -> np.ndarray:
        a, b = self._off[int(bit)]
        return self.state[:, a:b]

    @property
    def qpos(self) -> np.ndarray:
        """(num_envs, nq) view into the state."""
        return self._slice(mujoco.mjtState.mjSTATE_QPOS)

    @property
    def qvel(self) -> np.ndarray:
        """(num_envs, nv) view into the state."""
        return self._slice(mujoco.mjtState.mjSTATE_QVEL)

    # ---- stepping --------------------------------------------------------------------------------------------------

    def _upload(self) -> None:
        d = self._d
        d.time.assign(self._slice(mujoco.mjtState.mjSTATE_TIME)[:, 0].astype(np.float32))
        d.qpos.assign(self.qpos.astype(np.float32))
        d.qvel.assign(self.qvel.astype(np.float32))
        if self.na:
            d.act.assign(self._slice(mujoco.mjtState.mjSTATE_ACT).astype(np.float32))

    def _download(self) -> None:
        d = self._d
        self._slice(mujoco.mjtState.mjSTATE_TIME)[:, 0] = d.time.numpy()
        self.qpos[:] = d.qpos.numpy()
        self.qvel[:] = d.qvel.numpy()
        if self.na:
            self._slice(mujoco.mjtState.mjSTATE_ACT)[:] = d.act.numpy()

    def _substeps(self, n: int) -> None:
        """n physics steps, each followed by the running maximum of the sensors (one graph on CUDA)."""
        wp, mjw = self._wp, self._mjw

        def run() -> None:
            self._max.fill_(-1e30)
            for _ in range(n):
                mjw.step(self._m, self._d)
                wp.launch(self._max_kernel, dim=self._max.shape, inputs=[self._d.sensordata, self._max])

        if not self._use_graph:
            run()
            return
        graph = self._graphs.get(n)
        if graph is None:
            with wp.ScopedCapture(device=self.device) as cap:
                run()
            graph = self._graphs[n] = cap.graph
        wp.capture_launch(graph)

    def step(self, ctrl: np.ndarray, substeps: int, sensor_reduce: str = "last",
             xfrc_applied: np.ndarray | None = None) -> np.ndarray:
        """Advance every world by `substeps` physics steps holding `ctrl` fixed (see `Backend.step`)."""
        wp = self._wp
        n = self.num_envs
        with wp.ScopedDevice(self.device):
            self._upload()
            self._d.ctrl.assign(np.asarray(ctrl, dtype=np.float32))
            if xfrc_applied is None:
                self._d.xfrc_applied.zero_()
            else:
                xfrc = np.asarray(xfrc_applied, dtype=np.float32)
                if xfrc.shape != (n, self.nbody, 6):
                    raise ValueError(f"xfrc_applied has shape {xfrc.shape}; this backend takes ({n}, {self.nbody}, 6) "
                                     "(num_envs, nbody, force and torque)")
                self._d.xfrc_applied.assign(xfrc)
            self._substeps(substeps)
            self.sensor_max[:] = self._max.numpy()
            self.sensordata[:] = self.sensor_max if sensor_reduce == "max" else self._d.sensordata.numpy()
            self._download()
        return self.sensordata

    def diverged(self) -> np.ndarray:
        """(num_envs,) bool: worlds whose state holds NaN, inf or a value beyond MAX_VALUE."""
        return ~(np.abs(self.state) < MAX_VALUE).all(axis=1)

    def forward_sensors(self, env_ids: np.ndarray) -> None:
        """Recompute sensors for `env_ids` from their current state (every world is recomputed; cheap in a batch)."""
        with self._wp.ScopedDevice(self.device):
            self._upload()
            self._mjw.forward(self._m, self._d)
            self.sensordata[env_ids] = self._d.sensordata.numpy()[env_ids]

    # ---- randomisation ---------------------------------------------------------------------------------------------

    def randomize(self, env_ids: np.ndarray, fields: Sequence[FieldRandomization], values: np.ndarray) -> None:
        """Write drawn values (len(env_ids), n_draws) into the per-world rows of `fields`."""
        wp = self._wp
        cols = {name: j for j, name in enumerate(draw_names(fields))}
        env_ids = np.asarray(env_ids)
        by_field: dict[str, list[tuple[FieldRandomization, np.ndarray]]] = {}
        for f in fields:
            by_field.setdefault(f.field, []).append((f, values[:, cols[f.draw_name]]))
        for name, items in by_field.items():
            arr = getattr(self._m, name)
            rows = arr.numpy()
            host = rows.reshape(rows.shape[0], *getattr(self.base_model, name).shape)
            if host.shape[0] != self.num_envs:  # first randomisation of this field: one row per world
                host = np.repeat(host[:1], self.num_envs, axis=0)
            for f, v in items:
                if f not in self._nominal:
                    check_fields(self.base_model, [f])
                    self._nominal[f] = np.asarray(getattr(self.base_model, f.field), dtype=np.float64).copy()
                x0 = self._nominal[f]
                idx = _index(f, x0.ndim)
                nominal = x0[idx]
                vv = v.reshape((-1,) + (1,) * nominal.ndim)
                new = nominal * vv if f.op == "scale" else nominal + vv if f.op == "add" else np.broadcast_to(
                    vv, (len(v), *nominal.shape))
                sub = host[env_ids]
                sub[(slice(None), *idx)] = new
                host[env_ids] = sub
            flat = host.reshape(self.num_envs, *rows.shape[1:]).astype(rows.dtype)
            setattr(self._m, name, wp.array(flat, dtype=arr.dtype, device=self.device))
        self._graphs.clear()  # captured graphs hold the old arrays

    def set_model_pool(self, fields: Sequence[FieldRandomization], values: np.ndarray) -> None:
        """Remember len(values) randomised draws; `use_pool` copies a draw into a world's rows."""
        self._pool = (tuple(fields), np.asarray(values))

    def use_pool(self, env_ids: np.ndarray, picks: np.ndarray) -> None:
        """World env_ids[j] takes pool draw picks[j]."""
        if self._pool is None:
            raise RuntimeError("use_pool before set_model_pool")
        fields, values = self._pool
        self.randomize(np.asarray(env_ids), fields, values[np.asarray(picks)])

    # ---- device-resident access (sim/backends/warp_env.py) -----------------------------------------------------
    # The torch task reads and writes Warp's own arrays through `wp.to_torch` views (no copies) and steps
    # with `step_device`, which skips the host upload/download of `step`. `state`/`qpos`/`qvel` (the host
    # mirror) are then stale: one process uses one path per backend.

    def torch_view(self, name: str) -> Any:
        """Zero-copy torch view of a `mujoco_warp` Data array ("qpos", "qvel", "ctrl", "sensordata", "time"…), or
        of the per-substep sensor maximum ("sensor_max"). Writes through the view change the simulation."""
        arr = self._max if name == "sensor_max" else getattr(self._d, name)
        return self._wp.to_torch(arr)

    def expand_fields(self, fields: Sequence[FieldRandomization]) -> dict[str, Any]:
        """Give each randomised model field one row per world (once), and return torch views of them.

        Returns:
            Field name -> (num_envs, *MjModel shape) view; writing rows of it randomises those worlds in place,
            so captured graphs stay valid (unlike `randomize`, which allocates new arrays).
        """
        wp = self._wp
        views = {}
        for name in dict.fromkeys(f.field for f in fields):
            check_fields(self.base_model, [f for f in fields if f.field == name])
            arr = getattr(self._m, name)
            if arr.shape[0] != self.num_envs:
                rows = np.repeat(arr.numpy()[:1], self.num_envs, axis=0)
                setattr(self._m, name, wp.array(rows, dtype=arr.dtype, device=self.device))
                self._graphs.clear()
            views[name] = wp.to_torch(getattr(self._m, name)).reshape(self.num_envs, *getattr(self.base_model, name).shape)
        return views

    def forward_device(self) -> None:
        """Recompute the derived quantities and sensors of every world from Warp's own state (no host copies)."""
        with self._wp.ScopedDevice(self.device), self._torch_stream():
            self._mjw.forward(self._m, self._d)

    def step_device(self, substeps: int) -> None:
        """Advance every world by `substeps` physics steps from Warp's own state and `ctrl` (no host copies).

        On CUDA the graph is launched on Warp's stream ordered after the torch work that wrote the controls,
        and torch's stream waits for it, so reads through `torch_view` see the new state.
        """
        with self._wp.ScopedDevice(self.device), self._torch_stream():
            self._substeps(substeps)

    def _torch_stream(self) -> Any:
        """Order Warp's stream after torch's current one and torch's after Warp's on exit (CUDA); no-op on the CPU."""
        from contextlib import contextmanager

        @contextmanager
        def ordered():  # type: ignore[no-untyped-def]
            if not self.device.startswith("cuda"):
                yield
                return
            import torch

            wp = self._wp
            ws = wp.get_stream(self.device)
            ts = wp.stream_from_torch(torch.cuda.current_stream(torch.device(self.device)))
            ws.wait_stream(ts)
            yield
            ts.wait_stream(ws)

        return ordered()

    def close(self) -> None:
        """Drop the device arrays."""
        self._graphs.clear()
        self._m = self._d = None


_KERNELS: dict[str, object] = {}


def _max_kernel(wp: object) -> object:
    """dst = max(dst, src) elementwise over (world, sensor); defined on first use (warp is imported lazily)."""
    if "max" not in _KERNELS:

        @wp.kernel  # type: ignore[attr-defined]
        def max_into(src: wp.array2d(dtype=float), dst: wp.array2d(dtype=float)):  # type: ignore[name-defined]
            i, j = wp.tid()  # type: ignore[attr-defined]
            dst[i, j] = wp.max(dst[i, j], src[i, j])  # type: ignore[attr-defined]

        _KERNELS["max"] = max_into
    return _KERNELS["max"]


def _index(f: FieldRandomization, ndim: int) -> tuple:
    rows = slice(None) if f.rows is None else np.asarray(f.rows)
    if ndim == 1:
        return (rows,)
    cols = slice(None) if f.cols is None else np.asarray(f.cols)
    if f.rows is not None and f.cols is not None:
        return np.ix_(np.asarray(f.rows), np.asarray(f.cols))
    return (rows, cols)
