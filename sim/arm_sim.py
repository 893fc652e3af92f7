"""One simulated arm for the robot side to talk to: the Panda task behind the arm sim bridge.

It is the training task itself (one env), so the scene, randomisation, success test and episode ends are
exactly the task's; what changes is where the TCP target comes from: outside (a Cartesian command), taken
through the task's own differential IK and finger speed limit (`PandaEnv.step_cartesian`). It reads what
an arm's drivers report: arm and finger joint encoders, and the object's pose (a tracker's output). No ROS
here; `s2r_ros.arm_sim_bridge_node` wraps it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np
from s2r.sim.registry import make, task_config
from s2r.sim.tasks.manipulation.base import OBJ_POS, OBJ_QUAT, PandaEnv
from s2r.sim.tasks.manipulation.kinematics import ARM_DOF

JOINT_NAMES = tuple(f"joint{i + 1}" for i in range(ARM_DOF)) + ("finger_left", "finger_right")


@dataclass
class Episode:
    """How one episode ended."""

    index: int
    success: bool
    steps: int
    ret: float


class ArmSim:
    """A single Panda task env stepped by Cartesian targets, with its episodes counted.

    Args:
        task: Registered Panda task id.
        task_cfg: Its config (e.g. from `task_config_for_run`); the registered one by default.
        seed: Seed of the scene randomisation.
    """

    def __init__(self, task: str = "Panda-Lift-Cube", task_cfg: Any = None, seed: int = 0) -> None:
        cfg = task_cfg if task_cfg is not None else task_config(task)
        self.env: PandaEnv = make(task, 1, cfg=cfg, seed=seed)
        if not isinstance(self.env, PandaEnv):
            raise ValueError(f"the arm sim bridge runs Panda manipulation tasks; '{task}' is not one")
        self.task = task
        self.control_dt = float(cfg.control_dt)
        self.steps = 0
        self.episodes: list[Episode] = []
        self.env.reset(seed=seed)
        self._renderers: dict[tuple[str, int, int], tuple[mujoco.Renderer, int]] = {}
        self._render_data: mujoco.MjData | None = None

    @property
    def time(self) -> float:
        """Simulated seconds since start (it keeps running across episodes)."""
        return self.steps * self.control_dt

    def reset(self) -> None:
        """End the current episode without scoring it and start a new one (an operator's reset)."""
        self.env.reset()

    def step(self, ee_target: np.ndarray, finger_target: float) -> Episode | None:
        """One control period towards the TCP target; returns the episode if it ended (a new one has begun)."""
        _, _, term, trunc, info = self.env.step_cartesian(np.asarray(ee_target)[None], [finger_target])
        self.steps += 1
        if not (term[0] or trunc[0]):
            return None
        ep = info["episode"]
        done = Episode(index=len(self.episodes), success=bool(ep["success"][0]), steps=int(ep["length"][0]),
                       ret=float(ep["return"][0]))
        self.episodes.append(done)
        return done

    def hold_target(self) -> tuple[np.ndarray, float]:
        """The TCP and finger targets the task holds now (what the bridge steps with before any command)."""
        return self.env.ee_target[0].copy(), float(self.env.finger_target[0])

    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Arm then finger joint positions and velocities, in `JOINT_NAMES` order (copies)."""
        n = ARM_DOF + 2
        return self.env.backend.qpos[0, :n].copy(), self.env.backend.qvel[0, :n].copy()

    def object_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """The object's position (world) and orientation (w, x, y, z): what a tracker would report."""
        q = self.env.backend.qpos[0]
        return q[OBJ_POS].copy(), q[OBJ_QUAT].copy()

    def render(self, camera: str, height: int, width: int) -> np.ndarray:
        """(height, width, 3) uint8 RGB image of the current state from the model's camera `camera`.

        The GL context is released after every render (EGL), so the next one may come from another thread
        (an executor's): an EGL context can be current in one thread only, and a thread that still holds it
        would make every other thread's render fail.

        Raises:
            ValueError: `camera` is not a camera of the model.
        """
        model = self.env.backend.models[0]
        key = (camera, height, width)
        if key not in self._renderers:
            cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
            if cam_id < 0:
                names = [model.camera(i).name for i in range(model.ncam)]
                raise ValueError(f"camera '{camera}' is not a camera of the '{self.task}' model (it has {names})")
            self._renderers[key] = (mujoco.Renderer(model, height, width), cam_id)
            if self._render_data is None:
                self._render_data = mujoco.MjData(model)
        renderer, cam_id = self._renderers[key]
        d = self._render_data
        mujoco.mj_setState(model, d, self.env.backend.state[0], mujoco.mjtState.mjSTATE_FULLPHYSICS)
        mujoco.mj_forward(model, d)
        try:
            renderer.update_scene(d, camera=cam_id)
            return renderer.render()
        finally:
            release_gl_context()

    def close(self) -> None:
        """Stop the backend's threads and free the renderers."""
        self.env.close()
        for renderer, _ in self._renderers.values():
            renderer.close()
        self._renderers.clear()


def release_gl_context() -> None:
    """Leave no EGL context current in this thread (a no-op for other GL backends)."""
    if os.environ.get("MUJOCO_GL") != "egl":
        return
    from mujoco import egl
    from OpenGL import EGL

    if egl.EGL_DISPLAY is not None:
        EGL.eglMakeCurrent(egl.EGL_DISPLAY, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, EGL.EGL_NO_CONTEXT)

