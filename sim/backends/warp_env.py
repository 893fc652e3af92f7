"""The flat Go1 velocity task, device-resident: torch tensors over MuJoCo Warp's own arrays, no host copies.

`LocomotionEnv` (numpy) on the warp backend copies the state to the host and back every control step. This
env is the same task with its state never leaving the device: qpos, qvel, ctrl and the per-substep sensor
maximum are `wp.to_torch` views of the `mujoco_warp` arrays (zero-copy), actions are written into the
`ctrl` view, and observations, rewards, terminations, resets, command sampling, pushes and domain
randomisation (written in place into per-world model rows) are torch ops on the same device. It reads the
same `LocomotionConfig`, the same observation terms, scales and noise (`POLICY_TERMS`, `PRIVILEGED_TERMS`),
the same reward term functions and weights (`terms.reward_terms`, which run on torch through `xp`), the
same randomised fields (`randomization_fields`) and keeps `VelocityEnv.step`'s order of events.

What differs, on purpose:
- Random streams: a `torch.Generator` on the device, not numpy's, so draws differ from the numpy task's
  (same distributions). The parity test copies one task's draws into the other.
- Resets are masked, not indexed: every env's reset values are drawn and `torch.where` keeps those of the
  finished envs, so the step never asks the host which envs finished. The one host sync per step is
  `diverged.any()` (a rare branch). `info["episode"]` holds every env's statistics plus a `done` mask, and
  `info["final_obs"]` is always present.
- A reset does not rerun `mujoco_warp.forward`: the first observation reads qpos, qvel, command and
  actions only (touch is zero by definition), and the next step runs forward itself. `reset()` does.
- float32 throughout (Warp's precision); the numpy task computes its terms in float64 from the same floats.

Not done on the device (say so and refuse): rough terrain (spawn heights come from a host heightfield
lookup), a model pool (`randomization.model_pool`), and image groups.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import mujoco
import numpy as np
import torch
from s2r.sim.backends import FieldRandomization, check_fields, draw_names, make_backend
from s2r.sim.backends.warp import MAX_VALUE, WarpBackend
from s2r.sim.env import EnvSpec, GroupSpec, Obs, VecEnv, control_substeps, term_noise, term_scales
from s2r.sim.models import load_model, terrain_height_at
from s2r.sim.tasks import terms as T
from s2r.sim.tasks.locomotion import POLICY_TERMS, PRIVILEGED_TERMS, LocomotionConfig, randomization_fields
from s2r.sim.tasks.terms import reward_terms
from s2r.sim.tasks.velocity import CommandConfig

Tensor = torch.Tensor


class CommandSampler:
    """Draws (n, 3) commands with `sample_commands`' rules (zero share, then straight share) on one device.

    The bounds are put on the device once, so a draw copies nothing from the host.
    """

    def __init__(self, c: CommandConfig, device: torch.device) -> None:
        if not 0.0 <= c.zero_fraction + c.straight_fraction <= 1.0 or min(c.zero_fraction, c.straight_fraction) < 0:
            raise ValueError(f"commands.zero_fraction ({c.zero_fraction}) and commands.straight_fraction "
                             f"({c.straight_fraction}) must be >= 0 and add up to at most 1")
        self.cfg, self.device = c, device
        self.lo = torch.tensor([c.lin_vel_x[0], c.lin_vel_y[0], c.ang_vel_z[0]], device=device)
        self.hi = torch.tensor([c.lin_vel_x[1], c.lin_vel_y[1], c.ang_vel_z[1]], device=device)

    def __call__(self, gen: torch.Generator, n: int) -> Tensor:
        c = self.cfg
        cmd = self.lo + (self.hi - self.lo) * torch.rand(n, 3, generator=gen, device=self.device)
        u = torch.rand(n, 1, generator=gen, device=self.device)
        cmd = torch.where(u < c.zero_fraction, 0.0, cmd)
        straight = (u >= c.zero_fraction) & (u < c.zero_fraction + c.straight_fraction)
        return torch.cat([cmd[:, :1], torch.where(straight, 0.0, cmd[:, 1:])], dim=1)


def quat_rotate_inv(q: Tensor, v: Tensor) -> Tensor:
    """Rotate world vectors v (n, 3) into the frames of unit quaternions q (n, 4, wxyz)."""
    w, u = q[:, :1], -q[:, 1:]
    t = 2.0 * torch.linalg.cross(u, v)
    return v + w * t + torch.linalg.cross(u, t)


def norm_xy(v: Tensor) -> Tensor:
    """Length of the first two components along the last axis."""
    return torch.sqrt(v[..., 0] ** 2 + v[..., 1] ** 2)


class TorchLocomotionEnv(VecEnv):
    """Batched flat-ground Go1 velocity tracking on the warp backend, every tensor on `self.device`.

    `step(actions)` takes a (num_envs, nu) tensor and returns torch tensors: obs groups (float32),
    reward (float32), terminated and truncated (bool), and `info` with `final_obs` (the observation before
    auto-reset), `episode` (every env's return, length, vel_error and fell, with the `done` mask saying
    which rows finished) and `log` (`nan_resets`, a device scalar).
    """

    def __init__(self, cfg: LocomotionConfig, num_envs: int = 1, seed: int = 0) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if cfg.backend.name != "warp":
            raise ValueError(f"the device-resident task runs on backend.name=warp, not '{cfg.backend.name}'")
        if cfg.terrain != "flat":
            raise ValueError(f"terrain '{cfg.terrain}': the device-resident task is flat-ground only (spawn heights "
                             "on rough ground come from a host heightfield lookup); use the numpy task")
        if cfg.randomization.model_pool:
            raise ValueError("randomization.model_pool is a CPU-backend cache trick; set it to 0 on the warp backend")
        model = load_model(cfg.model, terrain=cfg.terrain, terrain_height=cfg.terrain_height, terrain_seed=seed)
        if cfg.randomization.calibration:
            from s2r.sim.calibrated import apply_actuator_calibration

            cfg = dataclasses.replace(cfg, randomization=apply_actuator_calibration(model, cfg.randomization, cfg.control_dt))
        self.cfg, self.model, self.num_envs = cfg, model, num_envs
        backend = make_backend("warp", model, num_envs, cfg.backend)
        if not isinstance(backend, WarpBackend):
            raise TypeError("backend 'warp' is not the MuJoCo Warp backend this task reads arrays from")
        self.backend = backend
        self.device = backend.device
        dev = self._dev = torch.device(backend.device)
        f32 = {"dtype": torch.float32, "device": dev}
        nu = model.nu
        if len(cfg.default_joint_pos) != nu:
            raise ValueError(f"default_joint_pos has {len(cfg.default_joint_pos)} values; the model has {nu} actuators")
        jid = model.actuator_trnid[:, 0]
        self._qadr = torch.as_tensor(model.jnt_qposadr[jid], device=dev)
        self._vadr = torch.as_tensor(model.jnt_dofadr[jid], device=dev)
        self.joint_names = tuple(model.joint(int(j)).name for j in jid)
        self.default_q = torch.tensor(cfg.default_joint_pos, **f32)
        self.joint_lower = torch.as_tensor(model.jnt_range[jid, 0], **f32)
        self.joint_upper = torch.as_tensor(model.jnt_range[jid, 1], **f32)
        self._kp = torch.as_tensor(model.actuator_gainprm[:, 0], **f32)
        self._kv = torch.as_tensor(-model.actuator_biasprm[:, 2], **f32)
        self._force = torch.as_tensor(model.actuator_forcerange, **f32)
        trunk = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, cfg.base_body)
        if trunk < 0:
            raise ValueError(f"base_body '{cfg.base_body}' is not a body of {cfg.model}; name the model's base body")
        self.dr_fields = randomization_fields(cfg.randomization, trunk)
        check_fields(model, self.dr_fields)
        self._nfeet = len(cfg.foot_sites)
        self.substeps = control_substeps(model.opt.timestep, cfg.control_dt)
        self._rewards = reward_terms(cfg.rewards)
        self._max_steps = round(cfg.episode_s / cfg.control_dt)
        self._push_every = max(1, round(cfg.randomization.push_interval_s / cfg.control_dt))
        self._cmd_every = max(1, round(cfg.commands.resample_s / cfg.control_dt))
        self.spec = EnvSpec(
            groups={"policy": GroupSpec(terms=POLICY_TERMS, history=cfg.history_length),
                    "privileged": GroupSpec(terms=PRIVILEGED_TERMS, history=cfg.privileged_history_length)},
            action_names=self.joint_names, control_dt=cfg.control_dt, max_episode_steps=self._max_steps,
            extras={"action_scale": cfg.action_scale, "default_joint_pos": list(cfg.default_joint_pos),
                    "joint_lower": self.joint_lower.tolist(), "joint_upper": self.joint_upper.tolist(),
                    "kp": self._kp.tolist(), "kv": self._kv.tolist()})
        self._policy_scale = torch.as_tensor(term_scales(POLICY_TERMS), **f32)
        self._policy_noise = torch.as_tensor(term_noise(POLICY_TERMS), **f32) * cfg.randomization.observation_noise
        self._priv_scale = torch.as_tensor(term_scales(PRIVILEGED_TERMS), **f32)
        # Zero-copy views of Warp's arrays: reading them reads the simulation, writing them changes it.
        self._qpos, self._qvel = backend.torch_view("qpos"), backend.torch_view("qvel")
        self._ctrl, self._time = backend.torch_view("ctrl"), backend.torch_view("time")
        self._sensordata, self._sensor_max = backend.torch_view("sensordata"), backend.torch_view("sensor_max")
        self._act = backend.torch_view("act") if model.na else None
        self._field_views = backend.expand_fields(self.dr_fields)
        self._field_index = {f: (slice(None), *_index(f, torch_index=True, device=dev)) for f in self.dr_fields}
        self._commands = CommandSampler(cfg.commands, dev)
        self._gravity = torch.tensor([0.0, 0.0, -1.0], **f32)
        self._nominal = {f: torch.as_tensor(np.asarray(getattr(model, f.field))[_index(f)], **f32) for f in self.dr_fields}
        self._draw_col = {name: j for j, name in enumerate(draw_names(self.dr_fields))}
        ranges: dict[str, tuple[float, float]] = {}
        for f in self.dr_fields:
            ranges.setdefault(f.draw_name, f.range)
        self._draw_lo = torch.tensor([r[0] for r in ranges.values()], **f32)
        self._draw_hi = torch.tensor([r[1] for r in ranges.values()], **f32)
        # Flat ground: one height under every spawn point (the origin), read once from the host model.
        self._ground = float(terrain_height_at(model, np.zeros((1, 2)))[0])
        self.gen = torch.Generator(device=dev)
        self.gen.manual_seed(seed)
        n = num_envs
        self.command = torch.zeros(n, 3, **f32)
        self.actions = torch.zeros(n, nu, **f32)
        self.actions_prev = torch.zeros(n, nu, **f32)
        self.episode_step = torch.zeros(n, dtype=torch.int64, device=dev)
        self.steps_run = torch.zeros(n, dtype=torch.int64, device=dev)  # as the numpy task's: steps actually run
        self.episode_return = torch.zeros(n, **f32)
        self.episode_tracking = torch.zeros(n, **f32)
        self.nan_resets = torch.zeros((), dtype=torch.int64, device=dev)
        self._act_queue = torch.zeros(max(3, cfg.randomization.action_latency_steps[1] + 1), n, nu, **f32)
        self.latency = torch.zeros(n, dtype=torch.int64, device=dev)
        self.joint_vel_prev = torch.zeros(n, nu, **f32)
        self.air_time = torch.zeros(n, self._nfeet, **f32)
        self.last_contact = torch.zeros(n, self._nfeet, dtype=torch.bool, device=dev)
        self.ground_z = torch.full((n,), self._ground, **f32)
        self.dr_params = torch.zeros(n, 4, **f32)
        self.targets = self.default_q.expand(n, nu).clone()
        self.touch = torch.zeros(n, self._nfeet, dtype=torch.bool, device=dev)
        self._arange = torch.arange(n, device=dev)
        self._history: dict[str, Tensor] = {}

    # ---- public API -------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> Obs:
        """Reset every env and return the first observations."""
        if seed is not None:
            self.gen.manual_seed(seed)
        self._reset_envs(torch.ones(self.num_envs, dtype=torch.bool, device=self._dev))
        self.backend.forward_device()
        self.touch.zero_()
        self._history = {}
        return self._observe(self._state(first=None))

    def step(self, actions: Tensor) -> tuple[Obs, Tensor, Tensor, Tensor, dict[str, Any]]:
        """Apply (num_envs, nu) actions for one control period (`VelocityEnv.step`'s order of events)."""
        cfg = self.cfg
        a = torch.as_tensor(actions, dtype=torch.float32, device=self._dev).reshape(self.num_envs, -1)
        if a.shape[1] != self.model.nu:
            raise ValueError(f"actions have {a.shape[1]} columns; this task has {self.model.nu} actuators")
        a = torch.nan_to_num(a.clamp(-cfg.action_clip, cfg.action_clip), nan=0.0)
        self.actions_prev.copy_(self.actions)
        self.actions.copy_(a)
        self._apply_action(a)

        self.episode_step += 1
        self.steps_run += 1
        bad = self.diverged()
        if bad.any():  # the one host sync of a step: a blown-up world is rare, and resetting it is not free
            self.nan_resets += bad.sum()
            self._reset_envs(bad)
            self.touch &= ~bad[:, None]

        s = self._state(first=True)
        reward = torch.zeros(self.num_envs, dtype=torch.float32, device=self._dev)
        dt = cfg.control_dt
        for fn, w, params in self._rewards:
            reward += w * dt * fn(s, **params)
        terminated = (s.base_height < cfg.min_base_height) | (s.projected_gravity[:, 2] > -np.cos(cfg.max_tilt_rad))
        terminated |= bad
        reward += cfg.rewards.termination * terminated
        truncated = (self.episode_step >= self._max_steps) & ~terminated
        self.episode_return += reward
        self.episode_tracking += norm_xy(self.command[:, :2] - s.base_lin_vel[:, :2])

        self._push(self.episode_step % self._push_every == 0)
        self._sample_commands(self.episode_step % self._cmd_every == 0)

        obs = self._observe(s)  # reads the command just resampled, as the numpy task does
        done = terminated | truncated
        info: dict[str, Any] = {
            "final_obs": obs,
            "episode": {"done": done, "return": self.episode_return.clone(), "length": self.steps_run.clone(),
                        "vel_error": self.episode_tracking / self.steps_run.clamp(min=1), "fell": terminated},
        }
        self._reset_envs(done)
        first = self._frames(self._state(first=None))
        obs = self._history_reset(first, done, obs)
        info["log"] = {"nan_resets": self.nan_resets}
        return obs, reward, terminated, truncated, info

    def randomize_episode_start(self) -> None:
        """Spread time-outs over the batch so resets do not arrive all at once (used by trainers)."""
        self.episode_step.copy_(torch.randint(0, self._max_steps, (self.num_envs,), generator=self.gen, device=self._dev))

    def diverged(self) -> Tensor:
        """(num_envs,) bool: worlds whose qpos or qvel holds NaN, inf or a value beyond MAX_VALUE."""
        return ~((self._qpos.abs() < MAX_VALUE).all(1) & (self._qvel.abs() < MAX_VALUE).all(1))

    def planar_pose(self) -> Tensor:
        """(num_envs, 3) trunk x, y and heading."""
        q = self._qpos[:, 3:7]
        w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
        yaw = torch.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
        return torch.stack([self._qpos[:, 0], self._qpos[:, 1], yaw], dim=1)

    def close(self) -> None:
        """Drop the device arrays."""
        self.backend.close()

    # ---- the step's parts ---------------------------------------------------------------------------

    def _apply_action(self, a: Tensor) -> None:
        # Action latency: the env applies the action from `latency` control steps ago.
        self._act_queue[1:] = self._act_queue[:-1].clone()
        self._act_queue[0] = a
        applied = self._act_queue[self.latency, self._arange]
        self.targets = self.default_q + self.cfg.action_scale * applied
        self.joint_vel_prev.copy_(self._qvel[:, self._vadr])
        self._ctrl.copy_(self.targets)  # straight into mujoco_warp's ctrl array
        self.backend.step_device(self.substeps)
        self.touch = self._sensor_max[:, : self._nfeet] > 0.0  # touched during any substep

    def _state(self, first: bool | None) -> T.LocoState:
        """Term inputs of every env; `first=True` advances the feet's air time (a step), None is a reset frame."""
        n, nf = self.num_envs, self._nfeet
        if first:
            touch = self.touch
            first_contact = (self.air_time > 0) & touch & ~self.last_contact
            air_at_td = self.air_time.clone()
            self.air_time = torch.where(touch, 0.0, self.air_time + self.cfg.control_dt)
            self.last_contact = touch.clone()
        else:
            touch = first_contact = torch.zeros(n, nf, dtype=torch.bool, device=self._dev)
            air_at_td = torch.zeros(n, nf, device=self._dev)
        qpos, qvel = self._qpos.clone(), self._qvel.clone()  # a snapshot: pushes and resets write the views
        quat = qpos[:, 3:7]
        g = self._gravity.expand(n, 3)
        foot_vel = self._sensordata[:, nf + 3 * nf : nf + 6 * nf].reshape(n, nf, 3)
        q, qd = qpos[:, self._qadr], qvel[:, self._vadr]
        strength = self.dr_params[:, 2:3]
        torques = torch.minimum(torch.maximum((self._kp * (self.targets - q) - self._kv * qd) * strength,
                                              self._force[:, 0] * strength), self._force[:, 1] * strength)
        return T.LocoState(
            xp=torch, base_lin_vel=quat_rotate_inv(quat, qvel[:, 0:3]), base_ang_vel=qvel[:, 3:6],
            projected_gravity=quat_rotate_inv(quat, g), base_height=qpos[:, 2] - self.ground_z, joint_pos=q,
            joint_vel=qd, joint_vel_prev=self.joint_vel_prev, default_joint_pos=self.default_q,
            joint_lower=self.joint_lower, joint_upper=self.joint_upper, torques=torques, action=self.actions,
            action_prev=self.actions_prev, command=self.command, foot_contact=touch, first_contact=first_contact,
            air_time_at_touchdown=air_at_td, foot_vel_xy=norm_xy(foot_vel), dt=self.cfg.control_dt)

    def _frames(self, s: T.LocoState) -> dict[str, Tensor]:
        """One frame of the `policy` terms (scaled, with noise) and of the `privileged` terms."""
        pol = torch.cat([T.OBS_TERMS[t.name](s) for t in POLICY_TERMS], dim=1) * self._policy_scale
        if self.cfg.randomization.observation_noise > 0:
            pol = pol + (torch.rand(pol.shape, generator=self.gen, device=self._dev) * 2 - 1) * self._policy_noise
        priv = [T.OBS_TERMS[t.name](s) for t in PRIVILEGED_TERMS[:-1]] + [self.dr_params]
        return {"policy": pol, "privileged": torch.cat(priv, dim=1) * self._priv_scale}

    def _observe(self, s: T.LocoState) -> Obs:
        """Observation groups of every env; pushes one frame onto each stacked group's history."""
        out = {}
        for g, frame in self._frames(s).items():
            h = self.spec.groups[g].history
            if h == 1:
                out[g] = frame.float()
                continue
            buf = self._history.get(g)
            buf = frame[:, None].repeat(1, h, 1) if buf is None else torch.cat([buf[:, 1:], frame[:, None]], dim=1)
            self._history[g] = buf
            out[g] = buf.reshape(self.num_envs, -1).float()
        return out

    def _history_reset(self, frames: dict[str, Tensor], done: Tensor, obs: Obs) -> Obs:
        """Rows `done` of `obs` become the first observation of their new episode (history restarts there)."""
        out = {}
        for g, frame in frames.items():
            h = self.spec.groups[g].history
            if h > 1:
                buf = torch.where(done[:, None, None], frame[:, None].repeat(1, h, 1), self._history[g])
                self._history[g] = buf
                frame = buf.reshape(self.num_envs, -1)
            out[g] = torch.where(done[:, None], frame.float(), obs[g])
        return out

    def _push(self, due: Tensor) -> None:
        """Add a uniform horizontal velocity of up to `push_velocity` m/s to the free base of the `due` envs."""
        push = self.cfg.randomization.push_velocity
        if push > 0:
            kick = (torch.rand(self.num_envs, 2, generator=self.gen, device=self._dev) * 2 - 1) * push
            self._qvel[:, :2] += torch.where(due[:, None], kick, 0.0)

    def _sample_commands(self, mask: Tensor) -> None:
        new = self._commands(self.gen, self.num_envs)
        self.command.copy_(torch.where(mask[:, None], new, self.command))

    def _reset_envs(self, mask: Tensor) -> None:
        """Randomise and reset the envs where `mask` (num_envs,) is True; every env draws, the others discard."""
        cfg, gen, dev, n = self.cfg, self.gen, self._dev, self.num_envs
        m1 = mask[:, None]
        draws = self._draw_lo + (self._draw_hi - self._draw_lo) * torch.rand(n, len(self._draw_lo), generator=gen, device=dev)
        self.randomize(mask, draws)
        lo, hi = cfg.randomization.action_latency_steps
        self.latency = torch.where(mask, torch.randint(lo, hi + 1, (n,), generator=gen, device=dev), self.latency)
        self.dr_params[:, 3] = self.latency.float()
        # Initial pose: zero state, spawn height, random yaw, joints near the default pose, a small base twist.
        yaw = (torch.rand(n, generator=gen, device=dev) * 2 - 1) * np.pi
        qpos = torch.zeros_like(self._qpos)
        qpos[:, 2] = self._ground + cfg.spawn_height
        qpos[:, 3], qpos[:, 6] = torch.cos(yaw / 2), torch.sin(yaw / 2)
        qpos[:, self._qadr] = self.default_q + (torch.rand(n, self.model.nu, generator=gen, device=dev) * 0.2 - 0.1)
        qvel = torch.zeros_like(self._qvel)
        qvel[:, :6] = torch.rand(n, 6, generator=gen, device=dev) * 0.2 - 0.1
        self._qpos.copy_(torch.where(m1, qpos, self._qpos))
        self._qvel.copy_(torch.where(m1, qvel, self._qvel))
        self._time.copy_(torch.where(mask, 0.0, self._time))
        if self._act is not None:
            self._act.copy_(torch.where(m1, 0.0, self._act))
        self.ground_z = torch.where(mask, self._ground, self.ground_z)
        for buf in (self.actions, self.actions_prev, self.joint_vel_prev, self.air_time):
            buf.copy_(torch.where(m1, 0.0, buf))
        self._act_queue.copy_(torch.where(m1[None], 0.0, self._act_queue))
        self.last_contact &= ~m1
        self.episode_step.copy_(torch.where(mask, 0, self.episode_step))
        self.steps_run.copy_(torch.where(mask, 0, self.steps_run))
        self.episode_return.copy_(torch.where(mask, 0.0, self.episode_return))
        self.episode_tracking.copy_(torch.where(mask, 0.0, self.episode_tracking))
        self.targets = torch.where(m1, self.default_q, self.targets)
        self._sample_commands(mask)

    def randomize(self, mask: Tensor, draws: Tensor) -> None:
        """Write (num_envs, n_draws) draws into the randomised model rows of the envs where `mask`, in place.

        Columns follow `draw_names(self.dr_fields)` (friction, added mass, motor strength), as `sample_draws`.
        """
        self.dr_params[:, :3] = torch.where(mask[:, None], draws[:, :3], self.dr_params[:, :3])
        for f in self.dr_fields:
            view, x0 = self._field_views[f.field], self._nominal[f]
            v = draws[:, self._draw_col[f.draw_name]].reshape(-1, *([1] * x0.ndim))
            new = x0 * v if f.op == "scale" else x0 + v if f.op == "add" else v.expand(-1, *x0.shape)
            idx = self._field_index[f]
            keep = mask.reshape(-1, *([1] * x0.ndim))
            view[idx] = torch.where(keep, new, view[idx])


def _index(f: FieldRandomization, torch_index: bool = False, device: Any = None) -> tuple:
    """Index of the randomised rows/columns into the field's MjModel shape (numpy, or torch tensors)."""
    conv = (lambda x: torch.as_tensor(x, device=device)) if torch_index else np.asarray
    rows = slice(None) if f.rows is None else conv(f.rows)
    if f.cols is None:
        return (rows,)
    cols = conv(f.cols)
    if f.rows is not None:
        return (rows[:, None], cols[None, :])
    return (rows, cols)
