"""Run-time edits of a world's own model: resized boxes and the bounding volumes that must follow them."""

from __future__ import annotations

import mujoco
import numpy as np


def set_box(m: mujoco.MjModel, geom: int, half: np.ndarray, pos: np.ndarray | None = None) -> None:
    """Resize (and move) box `geom` of model `m`; call `refit_bvh` for its body afterwards."""
    m.geom_size[geom] = half
    # The narrow phase skips pairs whose bounding spheres do not meet: keep them the box's.
    m.geom_rbound[geom] = float(np.linalg.norm(half))
    m.geom_aabb[geom] = [0.0, 0.0, 0.0, *half]
    if pos is not None:
        m.geom_pos[geom] = pos


def refit_bvh(m: mujoco.MjModel, body: int) -> None:
    """Recompute the bounding-volume hierarchy of `body` after its geoms were resized or moved.

    MuJoCo builds each body's box tree (in the body's inertial frame) at compile time and the broad and mid
    phase trust it: a geom made larger or moved at run time would have its contacts missed until the shapes
    overlap by the difference, and a light object is then squeezed deep into a finger before anything
    pushes back. Leaves are refitted from the geoms' boxes, inner nodes as the union of their children.
    """
    adr, num = int(m.body_bvhadr[body]), int(m.body_bvhnum[body])
    if num == 0:
        return
    r_inertial = np.empty(9)
    mujoco.mju_quat2Mat(r_inertial, m.body_iquat[body])
    r_inertial = r_inertial.reshape(3, 3)
    r_geom = np.empty(9)
    # Children follow their parent in the node array, so a reverse sweep sees children before parents.
    for node in range(adr + num - 1, adr - 1, -1):
        geom = int(m.bvh_nodeid[node])
        if geom >= 0:
            mujoco.mju_quat2Mat(r_geom, m.geom_quat[geom])
            rot = r_inertial.T @ r_geom.reshape(3, 3)  # geom frame -> inertial frame
            center = r_inertial.T @ (m.geom_pos[geom] - m.body_ipos[body]) + rot @ m.geom_aabb[geom, :3]
            m.bvh_aabb[node] = [*center, *(np.abs(rot) @ m.geom_aabb[geom, 3:])]
        else:
            a, b = m.bvh_aabb[adr + m.bvh_child[node]]
            lo = np.minimum(a[:3] - a[3:], b[:3] - b[3:])
            hi = np.maximum(a[:3] + a[3:], b[:3] + b[3:])
            m.bvh_aabb[node] = [*(lo + hi) / 2, *(hi - lo) / 2]
