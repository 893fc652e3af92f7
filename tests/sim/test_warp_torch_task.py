"""The device-resident Go1 task (torch over MuJoCo Warp's arrays) against the numpy task on the same backend.

Both envs run MuJoCo Warp on the CPU. The numpy task's draws (randomised fields, latency, command, initial
state) are copied into the torch env, then both step with the same actions: the torch task must give the same
observations, reward terms, rewards and done flags. Tolerances: the physics is the same float32 Warp code;
the numpy task computes its terms in float64 from those floats (and its ctrl in float64 before Warp rounds it),
the torch task in float32, so they agree to float32 rounding. Measured over this 10-step rollout: observations
1.6e-6 absolute, rewards 3e-8, each reward term 1.6e-5 relative at most. Asserted: observations 1e-4, rewards
1e-5 + 1e-4 relative, reward terms 2e-4 relative + 1e-6. One world starts on its side so a termination, its
penalty and the masked reset are compared too; a world is compared until it is reset (the two tasks' reset
draws differ), and the others keep being compared after it.
Warp compiles its CPU kernels on first use (about a minute on a cold cache, then cached on disk).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("mujoco_warp")
import torch
from s2r.sim import make, make_device_env, task_config

DEVICE = os.environ.get("S2R_WARP_TEST_DEVICE", "cpu")
TASK = "Go1-Velocity-Flat"
N = 3


def _cfg():
    # Noise and pushes are draws from each task's own stream: off, so the same state gives the same numbers.
    return task_config(TASK, {"backend.name": "warp", "backend.device": DEVICE, "randomization.observation_noise": 0.0,
                              "randomization.push_velocity": 0.0})


def _sync(np_env, t_env) -> None:
    """Copy the numpy task's per-env draws and state into the torch task."""
    dev = t_env._dev

    def tt(x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.tensor(np.array(x), dtype=dtype, device=dev)  # a copy: the numpy task writes its arrays in place

    everyone = torch.ones(N, dtype=torch.bool, device=dev)
    t_env.randomize(everyone, tt(np_env.dr_params[:, :3]))
    t_env.latency = tt(np_env.latency, torch.int64)
    t_env.dr_params[:, 3] = t_env.latency.float()
    t_env._qpos.copy_(tt(np_env.backend.qpos))
    t_env._qvel.copy_(tt(np_env.backend.qvel))
    for name in ("command", "actions", "actions_prev", "joint_vel_prev", "air_time", "ground_z"):
        getattr(t_env, name).copy_(tt(getattr(np_env, name)))
    t_env._act_queue.copy_(tt(np_env._act_queue))
    t_env.last_contact.copy_(tt(np_env.last_contact, torch.bool))
    t_env.episode_step.copy_(tt(np_env.episode_step, torch.int64))
    t_env.backend.forward_device()


def _record_terms(env, out: dict[str, list]) -> None:
    """Wrap the env's reward terms so each call's value is kept (name -> list of (num_envs,) arrays)."""
    wrapped = []
    for fn, w, params in env._rewards:
        def rec(s, _fn=fn, **kw):
            v = _fn(s, **kw)
            out.setdefault(_fn.__name__, []).append(np.asarray(v.cpu() if torch.is_tensor(v) else v, dtype=np.float64))
            return v

        wrapped.append((rec, w, params))
    env._rewards = wrapped


@pytest.fixture(scope="module")
def pair():
    cfg = _cfg()
    np_env = make(TASK, N, cfg=cfg, seed=3)
    t_env = make_device_env(TASK, N, cfg=cfg, seed=3)
    yield np_env, t_env
    np_env.close()
    t_env.close()


def test_same_state_same_actions_same_task(pair) -> None:
    np_env, t_env = pair
    np_env.reset(seed=3)
    t_env.reset(seed=3)
    # World 0 starts on its side (rolled 90 degrees): both tasks must end its episode on the first step.
    np_env.backend.qpos[0, 3:7] = [np.cos(np.pi / 4), np.sin(np.pi / 4), 0.0, 0.0]
    _sync(np_env, t_env)
    terms_np: dict[str, list] = {}
    terms_t: dict[str, list] = {}
    _record_terms(np_env, terms_np)
    _record_terms(t_env, terms_t)
    rng = np.random.default_rng(0)
    live = np.ones(N, dtype=bool)  # worlds not yet reset (reset draws differ between the tasks)
    done_seen = np.zeros(N, dtype=bool)
    for k in range(10):
        act = rng.normal(0.0, 0.4, (N, 12)).astype(np.float32)
        o_np, r_np, te_np, tr_np, info_np = np_env.step(act)
        o_t, r_t, te_t, tr_t, info_t = t_env.step(torch.as_tensor(act, device=t_env._dev))
        assert all(v.device == torch.device(t_env.device) for v in (*o_t.values(), r_t, te_t, tr_t))
        np.testing.assert_array_equal(te_t.cpu().numpy()[live], te_np[live], err_msg=f"terminated, step {k}")
        np.testing.assert_array_equal(tr_t.cpu().numpy()[live], tr_np[live], err_msg=f"truncated, step {k}")
        np.testing.assert_allclose(r_t.cpu().numpy()[live], r_np[live], rtol=1e-4, atol=1e-5, err_msg=f"reward, step {k}")
        for name in terms_np:
            np.testing.assert_allclose(terms_t[name][-1][live], terms_np[name][-1][live], rtol=2e-4, atol=1e-6,
                                       err_msg=f"reward term {name}, step {k}")
        done = te_np | tr_np
        # The observation that ended an episode (before the auto-reset), and every other live world's.
        final_np = info_np.get("final_obs", o_np)
        for g in ("policy", "privileged"):
            np.testing.assert_allclose(info_t["final_obs"][g].cpu().numpy()[live], final_np[g][live], atol=1e-4,
                                       err_msg=f"observation group {g}, step {k}")
            keep = live & ~done
            np.testing.assert_allclose(o_t[g].cpu().numpy()[keep], o_np[g][keep], atol=1e-4)
        done_seen |= done
        live &= ~done
    assert done_seen[0] and te_np.dtype == bool  # the world on its side did end (and its reward carried the penalty)
    assert live[1:].all(), "the standing worlds should run the whole comparison"
    assert terms_np.keys() == terms_t.keys() and len(terms_np) >= 8


def test_masked_reset_redraws_only_finished_worlds(pair) -> None:
    _, env = pair
    env.reset(seed=1)
    before = {name: view.clone() for name, view in env._field_views.items()}
    qpos_before = env._qpos.clone()
    mask = torch.tensor([True, False, False], device=env._dev)
    env._reset_envs(mask)
    for name, view in env._field_views.items():
        assert torch.equal(view[1:], before[name][1:]), f"{name} of a running world changed"
    assert torch.equal(env._qpos[1:], qpos_before[1:]) and not torch.equal(env._qpos[0], qpos_before[0])
    lo, hi = env.cfg.randomization.friction
    assert lo <= float(env.dr_params[0, 0]) <= hi
    # Friction is scaled from the model's nominal value in place (a zero-copy view of mujoco_warp's array).
    nominal = env.model.geom_friction[:, 0]
    np.testing.assert_allclose(env._field_views["geom_friction"][0, :, 0].cpu().numpy(),
                               nominal * float(env.dr_params[0, 0]), rtol=1e-5)


def test_commands_follow_the_config(pair) -> None:
    _, env = pair
    c = env.cfg.commands
    cmd = env._commands(env.gen, 4000).cpu().numpy()
    assert (cmd[:, 0] >= c.lin_vel_x[0]).all() and (cmd[:, 0] <= c.lin_vel_x[1]).all()
    assert (cmd[:, 2] >= c.ang_vel_z[0]).all() and (cmd[:, 2] <= c.ang_vel_z[1]).all()
    still = (cmd == 0).all(axis=1).mean()
    assert abs(still - c.zero_fraction) < 0.02


def test_rough_terrain_is_refused_in_one_sentence() -> None:
    cfg = task_config("Go1-Velocity-Rough", {"backend.name": "warp", "backend.device": DEVICE})
    with pytest.raises(ValueError, match="has no device-resident env"):
        make_device_env("Go1-Velocity-Rough", 2, cfg=cfg)
    from s2r.sim.backends.warp_env import TorchLocomotionEnv

    with pytest.raises(ValueError, match="flat-ground only"):
        TorchLocomotionEnv(cfg, num_envs=2)


def test_pushes_and_observation_noise_stay_in_their_ranges() -> None:
    cfg = task_config(TASK, {"backend.name": "warp", "backend.device": DEVICE})
    env = make_device_env(TASK, 64, cfg=cfg, seed=5)
    try:
        env.reset(seed=5)
        r = cfg.randomization
        due = torch.arange(64, device=env._dev) % 2 == 0
        before = env._qvel.clone()
        env._push(due)  # writes mujoco_warp's qvel through the view
        kick = (env.backend.torch_view("qvel") - before)[:, :2]
        assert (kick[~due] == 0).all() and (kick[due].abs() <= r.push_velocity + 1e-6).all()
        assert kick[due].abs().max() > 0.5 * r.push_velocity
        s = env._state(first=None)
        a, b = env._frames(s)["policy"], env._frames(s)["policy"]
        half = env._policy_noise  # each term's noise half-width times randomization.observation_noise
        assert ((a - b).abs() <= 2 * half + 1e-6).all() and ((a - b).abs() > 0).any()
        assert torch.equal(env._frames(s)["privileged"], env._frames(s)["privileged"])  # no noise there
    finally:
        env.close()


def test_stacked_history_slides_and_restarts_like_obs_history() -> None:
    cfg = task_config(TASK, {"backend.name": "warp", "backend.device": DEVICE, "history_length": 3,
                             "randomization.observation_noise": 0.0})
    env = make_device_env(TASK, 2, cfg=cfg, seed=2)
    try:
        d = env.spec.groups["policy"].frame_dim
        obs = env.reset(seed=2)["policy"].reshape(2, 3, d)
        assert obs.shape == (2, 3, d) and torch.equal(obs[:, 0], obs[:, 2])  # a fresh window: copies of one frame
        nxt, *_ = env.step(torch.zeros(2, 12, device=env._dev))
        nxt = nxt["policy"].reshape(2, 3, d)
        assert torch.equal(nxt[:, :2], obs[:, 1:]) and not torch.equal(nxt[:, 2], obs[:, 2])  # slid by one frame
        done = torch.tensor([True, False], device=env._dev)
        frames = env._frames(env._state(first=None))
        out = env._history_reset(frames, done, {"policy": nxt.reshape(2, -1), "privileged": frames["privileged"]})
        restarted = out["policy"].reshape(2, 3, d)
        assert torch.equal(restarted[0, 0], restarted[0, 2]) and torch.equal(restarted[1], nxt[1])
    finally:
        env.close()


def test_a_blown_up_world_is_reset_and_counted() -> None:
    cfg = task_config(TASK, {"backend.name": "warp", "backend.device": DEVICE})
    env = make_device_env(TASK, 2, cfg=cfg, seed=4)
    try:
        env.reset(seed=4)
        env._qvel[0, 6:] = float("nan")  # world 0's joints blow up; world 1 is fine
        env.backend.torch_view("qacc_warmstart")[0] = float("nan")  # mujoco_warp's solver falls back from it
        obs, rew, term, _, info = env.step(torch.zeros(2, 12, device=env._dev))
        assert int(info["log"]["nan_resets"]) == 1 and bool(term[0]) and not bool(term[1])
        for _ in range(3):
            obs, rew, *_ = env.step(torch.zeros(2, 12, device=env._dev))
        assert torch.isfinite(rew).all() and all(torch.isfinite(v).all() for v in obs.values())
        assert int(env.nan_resets) == 1 and torch.isfinite(env._qpos).all()
    finally:
        env.close()
