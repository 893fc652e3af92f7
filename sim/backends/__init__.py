"""Physics backends: what a task may ask of one, how it asks for one by name, and declared randomisation.

A task never constructs a backend. Its config carries a `BackendConfig` (`name` plus the CPU threading
knob) and the task calls `make_backend(cfg.backend.name, model, num_envs, cfg.backend)`. `"cpu"` (MuJoCo
in native threads through `mujoco.rollout`) is registered here; the GPU issue registers `"warp"` (MuJoCo
Warp) from its own module with `register_backend("warp", factory)`, meeting the same `Backend` protocol.

Domain randomisation is declared as model fields (`FieldRandomization`: an `MjModel` array name, which
rows/columns, a range, and how a drawn value acts on the nominal value). The task draws the values with
its own random stream (so the order of draws is the task's to keep) and hands them to
`backend.randomize(env_ids, fields, values)`. The CPU backend writes them into each env's own `MjModel`.
A GPU backend expands the same fields to one row per world (a `(nworld, *field_shape)` array in place of
the shared model array, as mjlab's `expand_model_fields` does) and writes the same values into the rows
`env_ids`, so one declaration serves both.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import mujoco
import numpy as np

OPS = ("scale", "add", "set")


@dataclass(frozen=True, kw_only=True)
class BackendConfig:
    """Which physics backend a task runs on.

    Attributes:
        name: Registered backend name: "cpu", or "warp" (MuJoCo Warp; needs the gpu extra).
        num_threads: CPU backend worker threads; 0 means one per available core.
        device: Warp backend device ("cuda:0", "cpu"); empty picks the first GPU, else the CPU.
        nconmax: Warp backend contacts preallocated per world; 0 lets mujoco_warp size them from the model.
        njmax: Warp backend constraint rows per world; 0 lets mujoco_warp size them.
        graph: Warp backend on CUDA: capture a control step's substeps as a CUDA graph and replay it.
    """

    name: str = "cpu"
    num_threads: int = 0
    device: str = ""
    nconmax: int = 0
    njmax: int = 0
    graph: bool = True


@dataclass(frozen=True, kw_only=True)
class FieldRandomization:
    """One randomised `MjModel` field.

    Attributes:
        field: `MjModel` array name, e.g. "geom_friction", "body_mass", "body_ipos", "actuator_gainprm",
            "dof_damping".
        rows: Indices along the first axis (geoms, bodies, actuators, dofs); None means all.
        cols: Indices along the second axis of a 2-D field (e.g. (0,) for sliding friction); None means all.
        range: (low, high) of the uniform draw.
        op: How a drawn value v acts on the nominal value x: "scale" (x * v), "add" (x + v) or "set" (v).
        draw: Fields with the same draw name take the same value per env (motor strength scales gains,
            biases and force limits together); empty means the field's own draw.
    """

    field: str
    rows: tuple[int, ...] | None = None
    cols: tuple[int, ...] | None = None
    range: tuple[float, float] = (1.0, 1.0)
    op: str = "scale"
    draw: str = ""

    @property
    def draw_name(self) -> str:
        """The name of the draw this field reads."""
        return self.draw or self.field


def draw_names(fields: Sequence[FieldRandomization]) -> tuple[str, ...]:
    """Distinct draw names in the order they first appear (the columns of a values array)."""
    return tuple(dict.fromkeys(f.draw_name for f in fields))


def check_fields(model: mujoco.MjModel, fields: Sequence[FieldRandomization]) -> None:
    """Raise ValueError (one sentence) for a field that names no `MjModel` array, a bad op, index or range."""
    for f in fields:
        arr = getattr(model, f.field, None)
        if not isinstance(arr, np.ndarray) or arr.ndim not in (1, 2) or arr.dtype != np.float64:
            names = [n for n in dir(model) if isinstance(getattr(model, n, None), np.ndarray)]
            close = difflib.get_close_matches(f.field, names, n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ValueError(f"FieldRandomization.field '{f.field}' is not a float MjModel array.{hint}")
        if f.op not in OPS:
            raise ValueError(f"FieldRandomization '{f.field}' has op '{f.op}'; use one of {', '.join(OPS)}")
        if f.range[0] > f.range[1]:
            raise ValueError(f"FieldRandomization '{f.field}' has range {f.range} with low > high; swap them")
        if f.rows is not None and (min(f.rows, default=0) < 0 or max(f.rows, default=0) >= arr.shape[0]):
            raise ValueError(f"FieldRandomization '{f.field}' rows {f.rows} are outside 0..{arr.shape[0] - 1}")
        if f.cols is not None and (arr.ndim == 1 or max(f.cols, default=0) >= arr.shape[1] or min(f.cols, default=0) < 0):
            raise ValueError(f"FieldRandomization '{f.field}' cols {f.cols} do not fit its shape {arr.shape}")


def sample_draws(rng: np.random.Generator, fields: Sequence[FieldRandomization], k: int) -> np.ndarray:
    """(k, n_draws) uniform values, one column per draw name (its first field's range), env-major order."""
    ranges = {}
    for f in fields:
        ranges.setdefault(f.draw_name, f.range)
    lo, hi = zip(*ranges.values(), strict=True)
    return rng.uniform(lo, hi, size=(k, len(ranges)))


@runtime_checkable
class Backend(Protocol):
    """What tasks use of a physics backend. Arrays are numpy on the CPU (torch on a GPU backend).

    Attributes:
        num_envs: Worlds stepped together.
        device: "cpu" or a torch device string.
        state: (num_envs, nstate) full physics state (MuJoCo's FULLPHYSICS layout), authoritative.
        sensordata: (num_envs, nsensordata) sensor readings after the last `step` / `forward_sensors`.
        models: Per-env `MjModel` objects on the CPU (what render and special-case writes use); a GPU
            backend keeps per-world field arrays instead and may leave this empty.
    """

    num_envs: int
    device: str
    state: Any
    sensordata: Any
    models: list[mujoco.MjModel]

    @property
    def qpos(self) -> Any:
        """(num_envs, nq) view into `state`; writes change the state."""

    @property
    def qvel(self) -> Any:
        """(num_envs, nv) view into `state`; writes change the state."""

    def step(self, ctrl: Any, substeps: int, sensor_reduce: str = "last", xfrc_applied: Any = None) -> Any:
        """Advance every world by `substeps` physics steps holding `ctrl` (num_envs, nu) fixed.

        `xfrc_applied` (num_envs, nbody, 6): world-frame force and torque on each body's centre of mass for
        these substeps only (none afterwards). Returns `sensordata`.
        """

    @property
    def sensor_max(self) -> Any:
        """(num_envs, nsensordata) largest reading of each sensor over the substeps of the last `step` (a foot
        that touched between control steps)."""

    def diverged(self) -> Any:
        """(num_envs,) bool: worlds whose state is NaN, inf or beyond MuJoCo's bound."""

    def forward_sensors(self, env_ids: Any) -> None:
        """Recompute `sensordata` for `env_ids` from their current state (after a reset)."""

    def randomize(self, env_ids: Any, fields: Sequence[FieldRandomization], values: Any) -> None:
        """Write `values` (len(env_ids), n_draws) into `fields` of the worlds `env_ids` (see `draw_names`)."""

    def set_model_pool(self, fields: Sequence[FieldRandomization], values: Any) -> None:
        """Build len(values) randomised models once; `use_pool` then points worlds at them."""

    def use_pool(self, env_ids: Any, picks: Any) -> None:
        """World env_ids[j] takes pool model picks[j]."""

    def close(self) -> None:
        """Release threads and device memory."""


BackendFactory = Callable[[mujoco.MjModel, int, BackendConfig], Backend]
_BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Register a backend factory under `name`; raises ValueError if the name is taken."""
    if name in _BACKENDS:
        raise ValueError(f"backend '{name}' is already registered")
    _BACKENDS[name] = factory


def backend_names() -> list[str]:
    """Registered backend names, sorted."""
    return sorted(_BACKENDS)


def make_backend(name: str, model: mujoco.MjModel, num_envs: int, cfg: BackendConfig | None = None) -> Backend:
    """Build the backend registered as `name` for `num_envs` copies of `model`.

    Raises:
        ValueError: `name` is not registered (the message names the close ones).
    """
    try:
        factory = _BACKENDS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_BACKENDS), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else f"registered: {', '.join(backend_names())}"
        raise ValueError(f"unknown backend '{name}' in backend.name; {hint}") from None
    if cfg is not None and cfg.device and name != "warp":  # it would be ignored: the run would not be where asked
        raise ValueError(f"backend.device '{cfg.device}' is a setting of the warp backend, not of '{name}'; "
                         "add --backend warp (backend.name=warp) or drop --device")
    return factory(model, num_envs, cfg or BackendConfig(name=name))


# Imported after the definitions above, which cpu.py uses.
from s2r.sim.backends.cpu import CpuBackend  # noqa: E402

CpuBackendConfig = BackendConfig  # the old name, kept for existing imports
register_backend("cpu", CpuBackend)


def _warp_backend(model: mujoco.MjModel, num_envs: int, cfg: BackendConfig) -> Backend:
    # Imported on use: warp and mujoco_warp are an optional extra and slow to import.
    from s2r.sim.backends.warp import WarpBackend

    return WarpBackend(model, num_envs, cfg)


register_backend("warp", _warp_backend)

__all__ = [
    "Backend",
    "BackendConfig",
    "CpuBackend",
    "CpuBackendConfig",
    "FieldRandomization",
    "backend_names",
    "check_fields",
    "draw_names",
    "make_backend",
    "register_backend",
    "sample_draws",
]
