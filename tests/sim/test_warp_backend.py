"""The MuJoCo Warp backend against the CPU backend, on the CPU (Warp runs there): same state, same actions.

Tolerances: Warp computes in float32 and its contact solver differs in detail from MuJoCo C, so worlds
match to 1e-5 in positions while nothing touches; over 0.8 s of standing on the ground with moving
targets the trunk pose matches to 5e-3 and the joints of legs in contact to 0.02 rad (measured: 2e-3, 6e-3).
The same test runs on a GPU where one is available (`bench/gpu.py` also checks it there).
"""

from __future__ import annotations

import os
from importlib.resources import files

import mujoco
import numpy as np
import pytest

pytest.importorskip("mujoco_warp")
from s2r.sim.backends import BackendConfig, FieldRandomization, make_backend

DEVICE = os.environ.get("S2R_WARP_TEST_DEVICE", "cpu")


@pytest.fixture(scope="module")
def go1() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(files("s2r.sim.models") / "go1.xml"))


def _pair(model: mujoco.MjModel, n: int, height: float = 0.0):
    cpu = make_backend("cpu", model, n, BackendConfig(num_threads=1))
    wb = make_backend("warp", model, n, BackendConfig(name="warp", device=DEVICE))
    key = model.key("home").id
    for b in (cpu, wb):
        b.qpos[:] = model.key_qpos[key]
        b.qpos[:, 2] += height
        b.qpos[:, 7:] += np.linspace(-0.1, 0.1, n)[:, None]  # the worlds differ
    return cpu, wb, model.key_ctrl[key]


def _ctrl(ctrl0: np.ndarray, k: int, n: int) -> np.ndarray:
    return ctrl0 + 0.2 * np.sin(0.3 * k + np.arange(len(ctrl0)))[None].repeat(n, 0) * np.linspace(0.5, 1.0, n)[:, None]


def test_parity_in_the_air(go1: mujoco.MjModel) -> None:
    cpu, wb, ctrl0 = _pair(go1, 3, height=1.0)  # a metre up: 10 control steps of falling touch nothing
    try:
        for k in range(10):
            cpu.step(_ctrl(ctrl0, k, 3), 4)
            wb.step(_ctrl(ctrl0, k, 3), 4)
        assert np.abs(cpu.qpos - wb.qpos).max() < 1e-5
        assert np.abs(cpu.qvel - wb.qvel).max() < 1e-3
        assert np.abs(cpu.sensordata - wb.sensordata).max() < 1e-3
        assert wb.qpos[0, 2] < 1.29 - 0.05  # it did fall
    finally:
        cpu.close()
        wb.close()


def test_parity_standing_with_contacts(go1: mujoco.MjModel) -> None:
    cpu, wb, ctrl0 = _pair(go1, 2)
    try:
        for k in range(40):
            cpu.step(_ctrl(ctrl0, k, 2), 4)
            wb.step(_ctrl(ctrl0, k, 2), 4)
        assert np.abs(cpu.qpos[:, :7] - wb.qpos[:, :7]).max() < 5e-3  # trunk position (m) and quaternion
        assert np.abs(cpu.qpos[:, 7:] - wb.qpos[:, 7:]).max() < 0.02  # joints of legs pressing on the ground
        assert not wb.diverged().any()
    finally:
        cpu.close()
        wb.close()


def test_randomised_fields_per_world_and_applied_forces(go1: mujoco.MjModel) -> None:
    cpu, wb, ctrl0 = _pair(go1, 3, height=1.0)
    try:
        fields = [FieldRandomization(field="body_mass", rows=(1,), range=(0.8, 1.2)),
                  FieldRandomization(field="dof_damping", rows=tuple(range(6, 18)), range=(0.5, 2.0))]
        values = np.array([[0.8, 0.5], [1.0, 1.0], [1.2, 2.0]])
        for b in (cpu, wb):
            b.randomize(np.arange(3), fields, values)
        xfrc = np.zeros((3, go1.nbody, 6))
        xfrc[:, 1, 2] = [0.0, 50.0, 120.0]  # an upward push on the trunk, different per world
        for k in range(10):
            cpu.step(_ctrl(ctrl0, k, 3), 4, xfrc_applied=xfrc)
            wb.step(_ctrl(ctrl0, k, 3), 4, xfrc_applied=xfrc)
        assert np.abs(cpu.qpos - wb.qpos).max() < 1e-5
        assert len({round(float(z), 4) for z in wb.qpos[:, 2]}) == 3  # the worlds really differ
    finally:
        cpu.close()
        wb.close()


def test_task_runs_on_the_warp_backend() -> None:
    from s2r.sim import make, task_config

    cfg = task_config("Go1-Velocity-Flat", {"backend.name": "warp", "backend.device": DEVICE})
    env = make("Go1-Velocity-Flat", 2, cfg=cfg, seed=0)
    try:
        obs = env.reset(seed=0)
        for _ in range(5):
            obs, rew, _term, _trunc, _info = env.step(np.zeros((2, env.spec.action_dim), np.float32))
        assert all(np.isfinite(v).all() for v in obs.values()) and np.isfinite(rew).all()
    finally:
        env.close()


def test_a_device_warp_does_not_see_is_one_sentence(go1: mujoco.MjModel) -> None:
    with pytest.raises(ValueError, match=r"backend.device 'cuda:7' is not a device Warp sees here"):
        make_backend("warp", go1, 1, BackendConfig(name="warp", device="cuda:7"))


def test_missing_warp_is_one_sentence(go1: mujoco.MjModel, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "mujoco_warp", None)
    with pytest.raises(ImportError, match=r"backend 'warp' needs MuJoCo Warp: pip install"):
        make_backend("warp", go1, 1, BackendConfig(name="warp"))
