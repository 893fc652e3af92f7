"""Confined maps: reproducible from the seed, tighter with difficulty, held-out seeds, voxels match the MJCF."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from s2r.sim.terrain.confined import (
    EVAL_SEEDS,
    MAP_GEOM_GROUP,
    ConfinedConfig,
    generate,
    load_confined_model,
    train_seed,
)


def test_same_seed_same_map_other_seed_other_map() -> None:
    a, b, c = generate(7, 0.5), generate(7, 0.5), generate(8, 0.5)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert a.kinds == b.kinds
    assert a.boxes.shape != c.boxes.shape or not np.allclose(a.boxes, c.boxes)


def test_difficulty_keeps_layout_and_tightens_it() -> None:
    seeds = range(20)
    lowest = []
    for d in (0.0, 0.5, 1.0):
        maps = [generate(s, d) for s in seeds]
        free = []
        for m in maps:
            occ = m.voxels()
            # Free height above the ground in every column that is open at the floor (ceiling where one is).
            open_col = ~occ[:, :, 0]
            first = np.where(occ.any(2), occ.argmax(2), occ.shape[2])
            free.append(first[open_col].min() * m.resolution)
        lowest.append(np.mean(free))
        assert [m.features for m in maps] == [generate(s, 0.0).features for s in seeds]
    assert lowest[0] > lowest[1] > lowest[2]
    # The hardest ceilings need a crouch (Go1 standing is ~0.4 m tall).
    assert lowest[2] < 0.36


def test_eval_seeds_are_held_out() -> None:
    train = {train_seed(i) for i in range(EVAL_SEEDS[-1] + 10)}
    assert not train & set(EVAL_SEEDS)


def test_bad_config_is_one_sentence() -> None:
    with pytest.raises(ValueError, match="length"):
        ConfinedConfig(length=2.0)
    with pytest.raises(ValueError, match="difficulty"):
        generate(0, 1.5)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_voxels_match_mjcf_geoms_under_ray_casts(seed: int) -> None:
    cmap = generate(seed, 0.8)
    occ = cmap.voxels()
    model = load_confined_model(cmap)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    group = np.zeros(6, dtype=np.uint8)
    group[MAP_GEOM_GROUP] = 1
    geomid = np.zeros(1, dtype=np.int32)
    rng = np.random.default_rng(seed)
    res, top = cmap.resolution, occ.shape[2] * cmap.resolution
    checked = 0
    for i, j in zip(rng.integers(0, occ.shape[0], 300), rng.integers(0, occ.shape[1], 300), strict=True):
        x, y = cmap.origin[:2] + (np.array([i, j]) + 0.5) * res
        col = occ[i, j]
        # Down from above: the top face of the highest box against the highest occupied voxel.
        dist = mujoco.mj_ray(model, data, np.array([x, y, top + 0.5]), np.array([0.0, 0.0, -1.0]), group, 1, -1, geomid)
        if col.any():
            assert dist >= 0, (i, j)
            hit = top + 0.5 - dist
            assert abs(hit - (np.flatnonzero(col)[-1] + 1) * res) <= res / 2 + 1e-6, (i, j)
            checked += 1
        else:
            assert dist < 0, (i, j)
        # Up from the ground in open-floor columns: the underside of the first box above.
        if not col[0]:
            dist = mujoco.mj_ray(model, data, np.array([x, y, 1e-3]), np.array([0.0, 0.0, 1.0]), group, 1, -1, geomid)
            if col.any():
                assert abs(1e-3 + dist - np.argmax(col) * res) <= res / 2 + 1e-6, (i, j)
            else:
                assert dist < 0
    assert checked > 50


def test_limbs_collide_with_the_map_but_not_the_ground_or_the_body() -> None:
    cmap = generate(1, 0.5)
    model = load_confined_model(cmap)
    data = mujoco.MjData(model)
    # Stand the robot against the side wall (inner face at y = -width/2 + wall): the right legs cross into it.
    data.qpos[:3] = (cmap.start[0], -ConfinedConfig().width / 2 + 0.1 + 0.1, 0.3)
    data.qpos[3] = 1.0
    data.qpos[7:] = (0.0, 0.9, -1.8) * 4
    mujoco.mj_forward(model, data)
    pairs = {(model.geom(c.geom1).name, model.body(model.geom_bodyid[c.geom2]).name) for c in data.contact[: data.ncon]}
    pairs |= {(model.geom(c.geom2).name, model.body(model.geom_bodyid[c.geom1]).name) for c in data.contact[: data.ncon]}
    limbs = {body for geom, body in pairs if geom.startswith("confined_") and body.endswith(("hip", "thigh", "calf"))}
    assert limbs, pairs
    # Limbs never touch the floor plane or the trunk: feet and trunk are still the only ground contacts.
    assert not any(g == "floor" and b.endswith(("hip", "thigh")) for g, b in pairs)
    off = load_confined_model(cmap, limb_contacts=False)
    d2 = mujoco.MjData(off)
    d2.qpos[:] = data.qpos
    mujoco.mj_forward(off, d2)
    assert d2.ncon < data.ncon


def test_map_file_for_the_robot_side_round_trips(tmp_path) -> None:
    from s2r.real.confined_planner import ConfinedPlanner, load_voxel_map
    from s2r.sim.terrain.confined import main

    out = tmp_path / "map.npz"
    assert main(["--seed", str(EVAL_SEEDS[1]), "--difficulty", "1", "--out", str(out)]) == 0
    occ, res, origin = load_voxel_map(str(out))
    cmap = generate(EVAL_SEEDS[1], 1.0)
    np.testing.assert_array_equal(occ, cmap.voxels())
    assert res == cmap.resolution and np.array_equal(origin, cmap.origin)
    path = ConfinedPlanner(occ, res, origin).plan(cmap.start, cmap.goal)
    assert np.hypot(*(path.waypoints[-1, :2] - cmap.goal[:2])) < 0.05
