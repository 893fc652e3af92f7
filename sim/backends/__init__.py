"""Physics backends. The CPU backend is the default; a GPU (MuJoCo Warp) backend meets the same surface:
`state`/`qpos`/`qvel` arrays, `step(ctrl, substeps)`, per-env models for randomisation."""

from s2r.sim.backends.cpu import CpuBackend, CpuBackendConfig

__all__ = ["CpuBackend", "CpuBackendConfig"]
