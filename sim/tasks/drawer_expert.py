"""Scripted expert for Panda-Drawer-Cube: pull the drawer open by its tab, then put the cube in the tray.

Its own module because `experts.py` is near the size limit; `make_expert` finds it like the others. With
`one_stage=True` it is the baseline that shows the task needs both stages: it skips the drawer, carries the cube
straight to where the slot is (over the shut drawer, i.e. the cabinet's top) and lets go there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from s2r.sim.tasks.experts import _AIM_OFF, _Expert


class DrawerCubeExpert(_Expert):
    """Drawer then cube: above the tab, down, close on it, pull, let go and rise; then the cube: approach, descend,
    close, lift, carry over the slot, lower, let go, rise."""

    (TAB_ABOVE, TAB_DOWN, TAB_CLOSE, PULL, TAB_RELEASE,
     APPROACH, DESCEND, CLOSE, LIFT, CARRY, LOWER, RELEASE, RETREAT) = range(13)
    TAB_HOVER = 0.05  # m above the grip point before going down onto the tab
    TAB_GRIP_Z = -0.008  # m, the TCP's height relative to the tab's centre: the pads cover its upper part
    TAB_GRIP_X = -0.004  # m, the TCP's x relative to the tab's centre (towards its free end)
    OPEN_EXTRA = 0.025  # m pulled past the task's open_distance, so a slight push-back stays open enough
    HOVER = 0.06  # m above the cube's centre before descending
    CARRY_Z = 0.15  # m, the cube's centre while carrying (its bottom clears the 8.7 cm cabinet and tab)
    DROP = 0.006  # m between the cube's bottom and the tray's floor when the hand opens
    RETREAT_Z = 0.2  # m, the TCP after letting go
    CLEAR_Z = 0.13  # m, the lowest TCP while moving sideways to the cube: the pads clear the open drawer's front

    def __init__(self, *args: Any, one_stage: bool = False, **kwargs: Any) -> None:
        self.one_stage = one_stage
        super().__init__(*args, **kwargs)

    def reset(self, env_ids: Any = None) -> None:
        super().reset(env_ids)
        if self.one_stage:
            ids = slice(None) if env_ids is None else np.asarray(env_ids, dtype=np.int64).reshape(-1)
            self.phase[ids] = self.APPROACH

    def _aim_off_range(self) -> tuple[float, float]:
        return 0.02, 0.04  # a pad lands on the tab or the cube instead of beside it

    def _release_window(self) -> tuple[int, int]:
        return 10, 60  # while pulling or while carrying

    def _plan(self, pol: np.ndarray, priv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ee = pol[:, self.pol["ee_pos"]]
        aim_off = np.where((self.failure == _AIM_OFF)[:, None], self.aim_offset, 0.0)
        cube = pol[:, self.pol["object_pos"]] + aim_off
        slot = pol[:, self.pol["target_pos"]]
        opening = pol[:, self.pol["drawer_opening"]][:, 0]
        tab = ee + pol[:, self.pol["handle_rel_ee"]] + aim_off
        grip_open = pol[:, self.pol["gripper_opening"]][:, 0]
        grip_vel = pol[:, self.pol["gripper_vel"]][:, 0]
        half = priv[:, self.priv["object_half_size"]][:, 0]
        grip_at = tab + [self.TAB_GRIP_X, 0.0, self.TAB_GRIP_Z]
        open_target = self.cfg.open_distance + self.OPEN_EXTRA
        held = np.linalg.norm(cube - ee, axis=1) < 0.02

        p = self.phase
        err_tab = np.linalg.norm(grip_at[:, :2] - ee[:, :2], axis=1)
        self._set_phase((p == self.TAB_ABOVE) & (err_tab < 0.006) & (ee[:, 2] < grip_at[:, 2] + self.TAB_HOVER + 0.02),
                        self.TAB_DOWN)
        self._set_phase((p == self.TAB_DOWN) & (np.abs(ee[:, 2] - grip_at[:, 2]) < 0.004), self.TAB_CLOSE)
        closed_tab = (grip_open < 2 * 0.008 + 0.004) & (np.abs(grip_vel) < 0.02) & (self.count >= 2)
        self._set_phase((p == self.TAB_CLOSE) & (closed_tab | (self.count >= 12)), self.PULL)
        # Slipped off the tab while pulling: go back up and take it again.
        slipped = (p == self.PULL) & (np.linalg.norm(grip_at - ee, axis=1) > 0.03)
        self._set_phase(slipped, self.TAB_ABOVE)
        self._set_phase((p == self.PULL) & (opening >= open_target - 0.003), self.TAB_RELEASE)
        self._set_phase((p == self.TAB_RELEASE) & (self.count >= 4) & (ee[:, 2] > grip_at[:, 2] + 0.04), self.APPROACH)

        err_xy = np.linalg.norm(cube[:, :2] - ee[:, :2], axis=1)
        hover = cube + [0.0, 0.0, self.HOVER]
        grasp_z = np.maximum(cube[:, 2] - 0.005, 0.012)
        self._set_phase((p == self.APPROACH) & (err_xy < 0.006) & (np.abs(hover[:, 2] - ee[:, 2]) < 0.02), self.DESCEND)
        self._set_phase((p == self.DESCEND) & (np.abs(grasp_z - ee[:, 2]) < 0.004) & (err_xy < 0.004), self.CLOSE)
        closed = (grip_open < 2 * half + 0.004) & (np.abs(grip_vel) < 0.02) & (self.count >= 2)
        self._set_phase((p == self.CLOSE) & (closed | (self.count >= 12)), self.LIFT)
        self._set_phase((p == self.LIFT) & (cube[:, 2] > self.CARRY_Z - 0.02), self.CARRY)
        over = np.linalg.norm(slot[:, :2] - cube[:, :2], axis=1) < 0.006
        self._set_phase((p == self.CARRY) & over, self.LOWER)
        drop_z = slot[:, 2] + self.DROP
        # Down to just over the floor, or (the one-stage baseline) stopped by the cabinet's top.
        self._set_phase((p == self.LOWER) & ((np.abs(cube[:, 2] - drop_z) < 0.003) | (self.count >= 20)), self.RELEASE)
        self._set_phase((p == self.RELEASE) & (self.count >= 5), self.RETREAT)
        # Lost the cube on the way (slipped, or dropped): pick it up again.
        lost = (p >= self.LIFT) & (p <= self.LOWER) & ~held & (self.count > 3)
        self._set_phase(lost, self.APPROACH)

        p = self.phase
        goal = ee.copy()
        grip = np.ones(self.num_envs)
        m = p == self.TAB_ABOVE
        goal[m] = grip_at[m] + [0.0, 0.0, self.TAB_HOVER]
        goal[m, 2] = np.maximum(goal[m, 2], np.where(err_tab[m] > 0.02, ee[m, 2], 0.0))  # no sweeping down on the way
        grip[m] = -1.0
        m = p == self.TAB_DOWN
        goal[m] = grip_at[m]
        grip[m] = -1.0
        m = p == self.TAB_CLOSE
        goal[m] = grip_at[m]
        m = p == self.PULL
        # Where the grip point is once the drawer is open_target open (the slide runs along -x).
        goal[m] = grip_at[m] - np.stack([open_target - opening[m], np.zeros(m.sum()), np.zeros(m.sum())], axis=1)
        m = p == self.TAB_RELEASE
        goal[m, 2] = np.where(self.count[m] >= 3, grip_at[m, 2] + 0.08, ee[m, 2])  # open first, then rise
        grip[m] = -1.0
        m = p == self.APPROACH
        goal[m] = hover[m]
        far = m & (err_xy > 0.02)
        goal[far, 2] = np.maximum(hover[far, 2], self.CLEAR_Z)  # go down only once over the cube
        low = far & (ee[:, 2] < self.CLEAR_Z - 0.03)
        goal[low, :2] = ee[low, :2]  # rise first: the open fingers would sweep into the drawer or the cube
        grip[m] = -1.0
        m = p == self.DESCEND
        goal[m, :2] = cube[m, :2]
        goal[m, 2] = grasp_z[m]
        grip[m] = -1.0
        m = p == self.LIFT
        goal[m, 2] = ee[m, 2] + (self.CARRY_Z - cube[m, 2])
        m = p == self.CARRY
        goal[m, :2] = (ee + slot - cube)[m, :2]
        goal[m, 2] = (ee[:, 2] + self.CARRY_Z - cube[:, 2])[m]
        m = p == self.LOWER
        goal[m] = (ee + slot - cube)[m]
        goal[m, 2] = (ee[:, 2] + drop_z - cube[:, 2])[m]
        m = p == self.RELEASE
        grip[m] = -1.0
        m = p == self.RETREAT
        goal[m, 2] = self.RETREAT_Z
        grip[m] = -1.0
        return goal, grip

