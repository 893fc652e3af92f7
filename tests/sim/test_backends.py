"""Backend protocol and registry, declared field randomisation, applied body forces (real MuJoCo)."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from s2r.sim import make, task_config
from s2r.sim.backends import (
    Backend,
    BackendConfig,
    CpuBackend,
    FieldRandomization,
    draw_names,
    make_backend,
    register_backend,
    sample_draws,
)
from s2r.sim.models import load_model, load_panda

F = FieldRandomization


def test_cpu_backend_meets_the_protocol() -> None:
    backend = make_backend("cpu", load_model("puck.xml"), 2, BackendConfig(num_threads=1))
    try:
        assert isinstance(backend, CpuBackend) and isinstance(backend, Backend)
        assert backend.qpos.shape == (2, backend.nq) and backend.state.shape[0] == 2
    finally:
        backend.close()


def test_unknown_backend_names_the_close_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown backend 'cpuu' in backend.name; did you mean cpu\?"):
        make_backend("cpuu", load_model("puck.xml"), 1)


def test_task_with_unknown_backend_is_refused() -> None:
    # (Was "warp" until the warp backend was registered: a name nothing is close to gets the registered list.)
    cfg = task_config("Puck-Velocity-Flat", {"backend.name": "isaacgym"})
    with pytest.raises(ValueError, match=r"unknown backend 'isaacgym' in backend\.name; registered: cpu, warp"):
        make("Puck-Velocity-Flat", 1, cfg=cfg)


def test_backend_names_are_registered_once() -> None:
    with pytest.raises(ValueError, match="backend 'cpu' is already registered"):
        register_backend("cpu", CpuBackend)


@pytest.mark.parametrize(("field", "message"), [
    (F(field="geom_frictoin"), r"'geom_frictoin' is not a float MjModel array. Did you mean: geom_friction"),
    (F(field="body_mass", op="times"), "has op 'times'; use one of scale, add, set"),
    (F(field="body_mass", range=(2.0, 1.0)), r"range \(2.0, 1.0\) with low > high"),
    (F(field="body_mass", rows=(99,)), r"rows \(99,\) are outside"),
    (F(field="body_mass", cols=(0,)), "cols .* do not fit its shape"),
])
def test_bad_field_randomization_is_refused(field: FieldRandomization, message: str) -> None:
    backend = CpuBackend(load_model("puck.xml"), 2, BackendConfig(num_threads=1))
    try:
        with pytest.raises(ValueError, match=message):
            backend.randomize(np.array([0]), [field], np.ones((1, 1)))
    finally:
        backend.close()


def test_randomize_scale_add_set_with_shared_draws() -> None:
    model = load_model("puck.xml")
    body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "puck")
    fields = (
        F(field="body_mass", rows=(body,), op="add", draw="m"),
        F(field="body_inertia", rows=(body,), op="scale", draw="s"),
        F(field="actuator_gear", cols=(0,), op="scale", draw="s"),
        F(field="dof_damping", rows=(2,), op="set", draw="d"),
    )
    assert draw_names(fields) == ("m", "s", "d")
    backend = CpuBackend(model, 3, BackendConfig(num_threads=1))
    try:
        values = np.array([[0.5, 2.0, 7.0], [-0.25, 3.0, 9.0]])
        backend.randomize(np.array([2, 0]), fields, values)
        for env, (m_add, s, d) in ((2, values[0]), (0, values[1])):
            m = backend.models[env]
            assert m.body_mass[body] == model.body_mass[body] + m_add
            np.testing.assert_array_equal(m.body_inertia[body], model.body_inertia[body] * s)
            np.testing.assert_array_equal(m.actuator_gear[:, 0], model.actuator_gear[:, 0] * s)
            np.testing.assert_array_equal(m.actuator_gear[:, 1:], model.actuator_gear[:, 1:])
            assert m.dof_damping[2] == d and m.dof_damping[0] == model.dof_damping[0]
        # Env 1 was not asked for: it keeps the nominal model; writes are relative to nominal, not cumulative.
        assert backend.models[1].body_mass[body] == model.body_mass[body]
        backend.randomize(np.array([0]), fields, values[:1])
        assert backend.models[0].body_mass[body] == model.body_mass[body] + 0.5
    finally:
        backend.close()


def test_sample_draws_is_env_major_with_one_column_per_draw() -> None:
    fields = (F(field="a", range=(0.0, 1.0), draw="x"), F(field="b", range=(5.0, 6.0), draw="y"),
              F(field="c", range=(0.0, 1.0), draw="x"))
    got = sample_draws(np.random.default_rng(0), fields, 4)
    want = np.random.default_rng(0).uniform((0.0, 5.0), (1.0, 6.0), size=(4, 2))
    np.testing.assert_array_equal(got, want)


def test_model_pool_shares_randomised_models() -> None:
    model = load_model("puck.xml")
    backend = CpuBackend(model, 4, BackendConfig(num_threads=1))
    try:
        fields = (F(field="dof_damping", op="scale"),)
        backend.set_model_pool(fields, np.array([[2.0], [3.0]]))
        backend.use_pool(np.array([0, 1, 3]), np.array([1, 0, 1]))
        assert backend.models[0] is backend.models[3]
        np.testing.assert_array_equal(backend.models[0].dof_damping, model.dof_damping * 3.0)
        np.testing.assert_array_equal(backend.models[1].dof_damping, model.dof_damping * 2.0)
        np.testing.assert_array_equal(backend.models[2].dof_damping, model.dof_damping)
    finally:
        backend.close()


def test_go1_randomisation_lands_in_each_env_model() -> None:
    env = make("Go1-Velocity-Flat", 3, seed=7)
    try:
        env.reset(seed=7)
        trunk = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_BODY, "trunk")
        for i in range(3):
            m, (fric, mass, strength) = env.backend.models[i], env.dr_params[i, :3]
            np.testing.assert_array_equal(m.geom_friction[:, 0], env.model.geom_friction[:, 0] * fric)
            assert m.body_mass[trunk] == env.model.body_mass[trunk] + mass
            np.testing.assert_array_equal(m.actuator_gainprm[:, 0], env.model.actuator_gainprm[:, 0] * strength)
            np.testing.assert_array_equal(m.actuator_biasprm[:, 2], env.model.actuator_biasprm[:, 2] * strength)
            np.testing.assert_array_equal(m.actuator_forcerange, env.model.actuator_forcerange * strength)
        assert len({float(env.backend.models[i].body_mass[trunk]) for i in range(3)}) == 3
    finally:
        env.close()


def _cube_in_the_air(num_envs: int) -> tuple[CpuBackend, int, float]:
    """Panda model with a cube 30 cm above the table, arm servos holding their start pose."""
    model = load_panda(("cube",))
    backend = CpuBackend(model, num_envs, BackendConfig(num_threads=1))
    cube = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "cube")
    adr = model.jnt_qposadr[model.body_jntadr[cube]]
    backend.qpos[:, adr : adr + 3] = [0.5, 0.0, 0.3]
    backend.qpos[:, adr + 3 : adr + 7] = [1.0, 0.0, 0.0, 0.0]
    return backend, cube, float(model.body_mass[cube])


def test_upward_force_equal_to_weight_holds_a_free_cube() -> None:
    backend, cube, mass = _cube_in_the_air(2)
    try:
        model = backend.base_model
        adr = model.jnt_qposadr[model.body_jntadr[cube]]
        ctrl = np.zeros((2, model.nu))
        ctrl[:, :7] = backend.qpos[:, :7]
        xfrc = np.zeros((2, model.nbody, 6))
        xfrc[0, cube, 2] = -mass * model.opt.gravity[2]  # env 0 held up, env 1 free
        for _ in range(10):  # 0.25 s
            backend.step(ctrl, 12, xfrc_applied=xfrc)
        z_held, z_free = backend.qpos[:, adr + 2]
        assert abs(z_held - 0.3) < 1e-6, z_held
        assert z_free < 0.3 - 0.2, z_free  # fell ~0.3 m in 0.25 s
        # The force lasts for the step that carried it: without it the held cube falls too.
        vz = backend.qvel[0, model.jnt_dofadr[model.body_jntadr[cube]] + 2]
        backend.step(ctrl, 12)
        assert backend.qvel[0, model.jnt_dofadr[model.body_jntadr[cube]] + 2] < vz - 0.2
    finally:
        backend.close()


def test_applied_forces_with_the_wrong_shape_are_refused() -> None:
    backend, _, _ = _cube_in_the_air(2)
    try:
        with pytest.raises(ValueError, match=r"xfrc_applied has shape \(2, 6\); this backend takes \(2, \d+, 6\)"):
            backend.step(np.zeros((2, backend.nu)), 2, xfrc_applied=np.zeros((2, 6)))
    finally:
        backend.close()


def test_go1_with_an_unknown_base_body_is_refused() -> None:
    cfg = task_config("Go1-Velocity-Flat", {"base_body": "torso"})
    with pytest.raises(ValueError, match=r"base_body 'torso' is not a body of go1\.xml"):
        make("Go1-Velocity-Flat", 1, cfg=cfg)
