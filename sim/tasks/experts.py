"""Scripted experts for the Panda manipulation tasks: demonstrations for behaviour cloning.

Each expert is a per-env phase machine (approach above the object, descend, close, lift, carry / align over
the socket, insert) that turns a goal for the tool centre point (TCP) into the tasks' task-space actions.
The env's TCP target moves by `max_step` per unit action and the IK tracks it within a millimetre, so
`action = (goal - tcp) / max_step`, clipped to [-1, 1], reaches a goal as fast as the action limit allows
without overshoot. Experts read the `policy` group for the robot and object positions and the
`privileged` group for what a camera-based estimator would supply on a real robot (object size and
orientation).

`noise` adds Gaussian action noise. `failure_rate` is the chance per episode that the expert is perturbed
into a plausible failure (it aims a few centimetres or millimetres off, or opens the hand early), so a
demonstration set can hold realistic failures too. Call `reset(env_ids)` for the envs that just finished.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from s2r.sim.registry import get_task, task_config, task_ids
from s2r.sim.tasks.manipulation import (
    DrawerCubeEnv,
    FlatBoxLiftEnv,
    InsertEnv,
    LiftEnv,
    PickPlaceEnv,
    long_axis,
    obs_slices,
    quat_z_axis,
    turn_term,
)

# Failure modes (0 = none).
_NONE, _AIM_OFF, _EARLY_RELEASE = 0, 1, 2


class _Expert:
    """Shared machinery: term lookup, per-env phase and failure mode, noise, goal-to-action conversion."""

    LEAD_S = 0.03  # s of TCP velocity the arm still has to cover from earlier commands

    def __init__(self, cfg: Any, env_cls: type, num_envs: int, noise: float, failure_rate: float, seed: int) -> None:
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be in [0, 1], got {failure_rate}")
        if noise < 0.0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.cfg = cfg
        self.num_envs = num_envs
        self.noise = noise
        self.failure_rate = failure_rate
        self.rng = np.random.default_rng(seed)
        self.pol = obs_slices(env_cls.POLICY_TERMS)
        self.priv = obs_slices(env_cls.PRIVILEGED_TERMS)
        self.max_step = cfg.arm.max_step
        self.phase = np.zeros(num_envs, dtype=np.int64)
        self.count = np.zeros(num_envs, dtype=np.int64)  # steps spent in the current phase
        self.t = np.zeros(num_envs, dtype=np.int64)  # steps since reset
        self.failure = np.zeros(num_envs, dtype=np.int64)
        self.aim_offset = np.zeros((num_envs, 3))
        self.release_step = np.zeros(num_envs, dtype=np.int64)
        self.reset()

    def reset(self, env_ids: Any = None) -> None:
        """Start a new episode for `env_ids` (default: all) and draw whether it will fail, and how."""
        ids = np.arange(self.num_envs) if env_ids is None else np.asarray(env_ids, dtype=np.int64).reshape(-1)
        k = len(ids)
        if k == 0:
            return
        self.phase[ids] = 0
        self.count[ids] = 0
        self.t[ids] = 0
        fail = self.rng.random(k) < self.failure_rate
        mode = self.rng.integers(_AIM_OFF, _EARLY_RELEASE + 1, k)
        self.failure[ids] = np.where(fail, mode, _NONE)
        lo, hi = self._aim_off_range()
        angle = self.rng.uniform(0, 2 * np.pi, k)
        radius = self.rng.uniform(lo, hi, k)
        self.aim_offset[ids] = np.stack([radius * np.cos(angle), radius * np.sin(angle), np.zeros(k)], axis=1)
        self.release_step[ids] = self.rng.integers(*self._release_window(), k)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """(num_envs, 4) actions in [-1, 1] for observation groups `obs` (`policy` and `privileged`), plus zeros for
        any privileged action columns the task declares."""
        pol = np.asarray(obs["policy"], dtype=np.float64)
        priv = np.asarray(obs["privileged"], dtype=np.float64)
        goal, grip = self._plan(pol, priv)  # (n, 3) TCP goal, (n,) gripper command
        ee = pol[:, self.pol["ee_pos"]]
        # The arm carries out a command over about one control step: aim from where the TCP is heading,
        # not where it is, or the expert overshoots and rings around fine goals.
        ahead = ee + self.LEAD_S * pol[:, self.pol["ee_vel"]]
        act = np.empty((self.num_envs, 4))
        act[:, :3] = (goal - ahead) / self.max_step
        act[:, 3] = grip
        release = (self.failure == _EARLY_RELEASE) & (self.t >= self.release_step)
        act[release, 3] = -1.0
        if self.noise > 0:
            act += self.rng.normal(0.0, self.noise, act.shape)
        self.t += 1
        self.count += 1
        act = np.clip(act, -1.0, 1.0).astype(np.float32)
        # A task with privileged action columns (a virtual wrench) gets them at zero: the expert needs no powers.
        extra = sum(p.action_dims for p in getattr(self.cfg, "privileged", ()))
        return np.concatenate([act, np.zeros((self.num_envs, extra), np.float32)], axis=1) if extra else act

    def _set_phase(self, mask: np.ndarray, phase: int) -> None:
        self.phase[mask] = phase
        self.count[mask] = 0

    def _aim_off_range(self) -> tuple[float, float]:
        raise NotImplementedError

    def _release_window(self) -> tuple[int, int]:
        raise NotImplementedError

    def _plan(self, pol: np.ndarray, priv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class CubeExpert(_Expert):
    """Lift and pick-and-place: approach above the cube, descend, close, lift, then carry to the target."""

    APPROACH, DESCEND, CLOSE, LIFT, CARRY = range(5)
    HOVER = 0.06  # m above the cube's centre before descending
    CARRY_HEIGHT = 0.08  # m, the cube's centre while moving sideways
    LIFT_HEIGHT = 0.12  # m, the cube's centre at the end of a lift

    def __init__(self, *args: Any, place: bool, **kwargs: Any) -> None:
        self.place = place
        super().__init__(*args, **kwargs)

    def _aim_off_range(self) -> tuple[float, float]:
        return 0.02, 0.04  # enough for a finger pad to land on the cube instead of beside it

    def _release_window(self) -> tuple[int, int]:
        return 8, 25  # somewhere between closing and finishing the carry

    def _plan(self, pol: np.ndarray, priv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ee = pol[:, self.pol["ee_pos"]]
        obj = pol[:, self.pol["object_pos"]]
        opening = pol[:, self.pol["gripper_opening"]][:, 0]
        grip_vel = pol[:, self.pol["gripper_vel"]][:, 0]
        half = priv[:, self.priv["object_half_size"]][:, 0]
        aim = obj + np.where((self.failure == _AIM_OFF)[:, None], self.aim_offset, 0.0)
        held = np.linalg.norm(obj - ee, axis=1) < 0.02

        # Lost the cube while lifting or carrying (slipped, or this env was reset without telling us): start over.
        lost = (self.phase >= self.CLOSE) & (self.count > 3) & ~held & (self.failure != _EARLY_RELEASE)
        self._set_phase(lost, self.APPROACH)

        p = self.phase
        err_xy = np.linalg.norm(aim[:, :2] - ee[:, :2], axis=1)
        hover = aim + [0.0, 0.0, self.HOVER]
        # The pads' tips are 4 mm past the TCP: grip just below the centre, clear of the table.
        grasp_z = np.maximum(aim[:, 2] - 0.005, 0.012)
        self._set_phase((p == self.APPROACH) & (err_xy < 0.006) & (np.abs(hover[:, 2] - ee[:, 2]) < 0.02), self.DESCEND)
        self._set_phase((p == self.DESCEND) & (np.abs(grasp_z - ee[:, 2]) < 0.004) & (err_xy < 0.004), self.CLOSE)
        closed = (opening < 2 * half + 0.004) & (np.abs(grip_vel) < 0.02) & (self.count >= 2)
        self._set_phase((p == self.CLOSE) & (closed | (self.count >= 12)), self.LIFT)
        if self.place:
            self._set_phase((p == self.LIFT) & (obj[:, 2] > half + 0.02), self.CARRY)

        p = self.phase
        goal = ee.copy()
        grip = np.full(self.num_envs, 1.0)
        m = p == self.APPROACH
        goal[m] = hover[m]
        # Over the cube's side of the table, rise first so the open fingers do not sweep into it.
        low = m & (err_xy > 0.02) & (ee[:, 2] < aim[:, 2] + 0.03)
        goal[low, :2] = ee[low, :2]
        grip[m] = -1.0
        m = p == self.DESCEND
        goal[m, :2] = aim[m, :2]
        goal[m, 2] = grasp_z[m]
        grip[m] = -1.0
        m = p == self.LIFT
        goal[m, 2] = ee[m, 2] + (self.LIFT_HEIGHT - obj[m, 2])
        m = p == self.CARRY
        if m.any():
            target = pol[:, self.pol["target_pos"]]
            want = target - (obj - ee)  # TCP goal that puts the cube's centre on the target
            far = np.linalg.norm(target[:, :2] - obj[:, :2], axis=1) > 0.03
            high = ee[:, 2] + (self.CARRY_HEIGHT - obj[:, 2])
            want[:, 2] = np.where(far, np.maximum(want[:, 2], high), want[:, 2])
            goal[m] = want[m]
        return goal, grip


class InsertExpert(_Expert):
    """Peg insertion: align the peg's bottom over the hole, then push down slowly while correcting."""

    ALIGN, INSERT = range(2)
    HOVER = 0.01  # m of the peg's bottom above the socket's top while aligning
    XY_TOL = 0.001  # m of alignment error before descending (the clearance per side is 0.5-1 mm)
    DESCENT = 0.004  # m per step into the hole

    def _aim_off_range(self) -> tuple[float, float]:
        return 0.002, 0.005  # a few millimetres: the peg lands on the wall's rim and jams

    def _release_window(self) -> tuple[int, int]:
        return 1, 6  # while still moving over: the peg drops beside or onto the socket, not into it

    def _plan(self, pol: np.ndarray, priv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ee = pol[:, self.pol["ee_pos"]]
        peg = pol[:, self.pol["object_pos"]]
        socket = pol[:, self.pol["target_pos"]] + np.where((self.failure == _AIM_OFF)[:, None], self.aim_offset, 0.0)
        quat = priv[:, self.priv["object_quat"]]
        bottom = peg - self.cfg.peg_half_length * quat_z_axis(quat)
        err_xy = np.linalg.norm(socket[:, :2] - bottom[:, :2], axis=1)
        above = bottom[:, 2] > socket[:, 2] + 0.001

        p = self.phase
        hover_err = np.abs(socket[:, 2] + self.HOVER - bottom[:, 2])
        self._set_phase((p == self.ALIGN) & (err_xy < self.XY_TOL) & (hover_err < 0.003), self.INSERT)
        # Drifted off while still above the hole: back off and align again rather than jam on the rim.
        self._set_phase((p == self.INSERT) & above & (err_xy > 2.5 * self.XY_TOL), self.ALIGN)

        p = self.phase
        goal = ee + np.concatenate([socket[:, :2] - bottom[:, :2], np.zeros((self.num_envs, 1))], axis=1)
        m = p == self.ALIGN
        # Far off the hole, stay 3 cm up so the peg clears the socket's walls on the way.
        far = err_xy > 0.01
        clear = np.where(far, 0.03, self.HOVER)
        goal[m, 2] = ee[m, 2] + (socket[m, 2] + clear[m] - bottom[m, 2])
        m = p == self.INSERT
        goal[m, 2] = ee[m, 2] - self.DESCENT
        return goal, np.ones(self.num_envs)


class FlatBoxExpert(_Expert):
    """Flat-box lift: push the box's ledge-side end sideways until the box has turned, then grasp its short side.

    The box starts with its long axis pointing at the ledge (+y). With the hand closed, the expert pushes the
    end near the ledge in +x, perpendicular to the long axis, at a lever point `LEVER` of the half length
    from the centre; the box turns about a point near its other end (yaw falls towards 0) and moves away
    from the ledge. It tracks the turning face every step. Once the long axis is within `DONE_DEG` of world x,
    it rises, opens, descends over the centre and closes across the 4.4-5.2 cm short side, then lifts.

    `turn=False` skips the turn: the top-down grasp baseline, which closes on the long side and fails.
    """

    ABOVE, DOWN, PUSH, RISE, APPROACH, DESCEND, CLOSE, LIFT = range(8)
    HOVER = 0.06  # m above the box's centre before descending to grasp
    LEVER = 0.6  # push point along the long axis, as a fraction of the half length from the centre
    CLEAR = 0.03  # m between the box's side face and the TCP before a push
    HAND_HALF = 0.011  # m, half the closed hand's extent across the push direction
    PUSH_DEPTH = 0.008  # m the push goal lies past the face
    PUSH_SPEED = 0.008  # m per step at most while pushing (0.16 m/s): faster and the box slides instead of turning
    LEDGE_CLEAR = 0.02  # m the TCP keeps off the ledge's face when it goes down for a push
    DONE_DEG = 84.0  # turned this far, the fingers span the short side with room to spare
    LIFT_HEIGHT = 0.12  # m, the box's centre at the end of a lift

    def __init__(self, *args: Any, turn: bool = True, **kwargs: Any) -> None:
        self.turn = turn
        super().__init__(*args, **kwargs)

    def reset(self, env_ids: Any = None) -> None:
        super().reset(env_ids)
        if not self.turn:
            ids = slice(None) if env_ids is None else np.asarray(env_ids, dtype=np.int64).reshape(-1)
            self.phase[ids] = self.APPROACH

    def _aim_off_range(self) -> tuple[float, float]:
        return 0.02, 0.04

    def _release_window(self) -> tuple[int, int]:
        return 30, 60

    def _plan(self, pol: np.ndarray, priv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ee = pol[:, self.pol["ee_pos"]]
        box = pol[:, self.pol["object_pos"]] + np.where((self.failure == _AIM_OFF)[:, None], self.aim_offset, 0.0)
        quat = pol[:, self.pol["object_quat"]]
        opening = pol[:, self.pol["gripper_opening"]][:, 0]
        grip_vel = pol[:, self.pol["gripper_vel"]][:, 0]
        half_len = priv[:, self.priv["box_half_length"]][:, 0]
        half_w = priv[:, self.priv["box_half_width"]][:, 0]
        half_t = priv[:, self.priv["box_half_thickness"]][:, 0]

        u = long_axis(quat)
        u[:, 2] = 0.0
        u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-9)
        u *= np.where(u[:, :1] + u[:, 1:2] >= 0.0, 1.0, -1.0)  # the end that started at the ledge
        n = np.stack([u[:, 1], -u[:, 0], np.zeros(self.num_envs)], axis=1)  # push direction: turns yaw down
        lever = box + (self.LEVER * half_len)[:, None] * u
        pre = lever - (half_w + self.HAND_HALF + self.CLEAR)[:, None] * n
        push_z = np.maximum(box[:, 2], 0.012)
        pre[:, 1] = np.minimum(pre[:, 1], self.cfg.ledge_y - self.LEDGE_CLEAR)  # never come down on the ledge
        pre[:, 2] = push_z
        turned = turn_term(quat) >= np.sin(np.radians(self.DONE_DEG))

        p = self.phase
        err_pre = np.linalg.norm(pre[:, :2] - ee[:, :2], axis=1)
        self._set_phase((p == self.ABOVE) & (err_pre < 0.008), self.DOWN)
        self._set_phase((p == self.DOWN) & (np.abs(ee[:, 2] - push_z) < 0.005), self.PUSH)
        # Slipped off the end or past the face: start the push again from above.
        off = np.abs(((ee - lever) * u).sum(axis=1)) > 0.03
        self._set_phase((p == self.PUSH) & off & ~turned, self.ABOVE)
        self._set_phase((p <= self.PUSH) & turned, self.RISE)
        self._set_phase((p == self.RISE) & (ee[:, 2] > box[:, 2] + 0.04), self.APPROACH)
        err_xy = np.linalg.norm(box[:, :2] - ee[:, :2], axis=1)
        hover = box + [0.0, 0.0, self.HOVER]
        grasp_z = np.maximum(box[:, 2] - 0.005, 0.012)
        self._set_phase((p == self.APPROACH) & (err_xy < 0.006) & (np.abs(hover[:, 2] - ee[:, 2]) < 0.02), self.DESCEND)
        there = (np.abs(grasp_z - ee[:, 2]) < 0.004) & (err_xy < 0.005)
        # Fingers standing on the box (an unturned box is wider than the hand): close anyway, as a script would.
        self._set_phase((p == self.DESCEND) & (there | (self.count >= 15)), self.CLOSE)
        closed = (opening < 2 * half_w + 0.004) & (np.abs(grip_vel) < 0.02) & (self.count >= 2)
        self._set_phase((p == self.CLOSE) & (closed | (self.count >= 12)), self.LIFT)

        p = self.phase
        goal = ee.copy()
        grip = np.ones(self.num_envs)
        m = p == self.ABOVE
        goal[m, :2] = pre[m, :2]
        goal[m, 2] = np.maximum(box[m, 2] + half_t[m] + 0.04, ee[m, 2])  # over the box, never dragging across it
        m = p == self.DOWN
        goal[m] = pre[m]
        m = p == self.PUSH
        into = lever - (half_w + self.HAND_HALF - self.PUSH_DEPTH)[:, None] * n
        # Command the speed, not a position: the TCP target moves by at most PUSH_SPEED per step (act() aims from
        # where the TCP is heading, so add that lead back).
        ahead = ee[:, :2] + self.LEAD_S * pol[:, self.pol["ee_vel"]][:, :2]
        step = into[:, :2] - ahead
        step *= np.minimum(1.0, self.PUSH_SPEED / np.maximum(np.linalg.norm(step, axis=1, keepdims=True), 1e-9))
        goal[m, :2] = ahead[m] + step[m]
        goal[m, 2] = push_z[m]
        m = p == self.RISE
        goal[m, 2] = box[m, 2] + 0.06
        m = p == self.APPROACH
        goal[m] = hover[m]
        low = m & (err_xy > 0.02) & (ee[:, 2] < box[:, 2] + 0.03)
        goal[low, :2] = ee[low, :2]
        grip[(p == self.RISE) | m] = -1.0
        m = p == self.DESCEND
        goal[m, :2] = box[m, :2]
        goal[m, 2] = grasp_z[m]
        grip[m] = -1.0
        m = p == self.LIFT
        goal[m, 2] = ee[m, 2] + (self.LIFT_HEIGHT - box[m, 2])
        return goal, grip


def _drawer_expert(*args: Any, **kwargs: Any) -> _Expert:
    # Imported here: drawer_expert.py builds on `_Expert` from this module.
    from s2r.sim.tasks.drawer_expert import DrawerCubeExpert

    return DrawerCubeExpert(*args, **kwargs)


_EXPERTS = {
    LiftEnv: lambda *a, **k: CubeExpert(*a, place=False, **k),
    PickPlaceEnv: lambda *a, **k: CubeExpert(*a, place=True, **k),
    InsertEnv: InsertExpert,
    FlatBoxLiftEnv: FlatBoxExpert,
    DrawerCubeEnv: _drawer_expert,
}


def expert_task_ids() -> list[str]:
    """Registered task ids that have a scripted expert (sorted)."""
    return [t for t in task_ids() if get_task(t).env_cls in _EXPERTS]


def make_expert(task_id: str, num_envs: int, noise: float = 0.0, failure_rate: float = 0.0, seed: int = 0,
                cfg: Any = None) -> _Expert:
    """A scripted expert for a Panda manipulation task.

    Args:
        task_id: Registered task id ("Panda-Lift-Cube", "Panda-PickPlace-Cube", "Panda-Insert-Peg",
            "Panda-Lift-FlatBox", "Panda-Drawer-Cube", or another id registered with one of their env classes).
        num_envs: Envs the expert acts for (the env's batch size).
        noise: Standard deviation of Gaussian noise added to every action (before clipping to [-1, 1]).
        failure_rate: Probability per episode that the expert is perturbed into a plausible failure.
        seed: Seed of the noise and failure draws.
        cfg: The task config the env was built with, when it differs from the registered one (the expert
            reads the action step size and the peg length from it).

    Returns:
        An object with `reset(env_ids)` and `act(obs) -> (num_envs, action_dim)` float32 actions (the task's four,
        then zeros for its privileged columns).

    Raises:
        ValueError: The task has no scripted expert.
    """
    env_cls = get_task(task_id).env_cls
    if env_cls not in _EXPERTS:
        raise ValueError(f"task '{task_id}' has no scripted expert; tasks with one: {', '.join(expert_task_ids())}")
    cfg = cfg if cfg is not None else task_config(task_id)
    return _EXPERTS[env_cls](cfg, env_cls, num_envs, noise, failure_rate, seed)
