"""PPO on the device-resident Go1 task (`s2r train Go1-Velocity-Flat --backend warp`), run here on Warp's CPU.

On the CPU a torch tensor and a numpy array can share memory, so "no host copies" cannot be read off the
device. What this checks instead is that the loop never takes a path that would copy on a GPU: during a
training iteration every numpy conversion (`Tensor.numpy`, `np.asarray(tensor)`, `torch.from_numpy`,
`torch.as_tensor(ndarray)`), every `torch.tensor(list or array)`, every Warp download (`wp.array.numpy`) and the
warp backend's host step, upload, download and host randomisation raise; and the rollout storage,
normaliser, networks and observations sit on the env's device. (Scalar reads such as `.item()` for the
logged losses are allowed: a sync, not a copy of data the loop needs.)
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

pytest.importorskip("mujoco_warp")
import torch
from s2r.policies.driver import Budget, RunDriver, new_run_spec, train
from s2r.policies.ppo import PPOTrainer

DEVICE = os.environ.get("S2R_WARP_TEST_DEVICE", "cpu")
TASK = "Go1-Velocity-Flat"


def _spec(num_envs: int, steps: int, **algo: object):
    overrides = {"algo.steps_per_env": 4, "algo.minibatches": 2, "algo.epochs": 2, "export_parity_steps": 2, **algo}
    return new_run_spec("ppo", TASK, task_overrides={"backend.name": "warp", "backend.device": DEVICE},
                        algo_overrides=overrides, num_envs=num_envs, seed=0, budget=Budget(steps=steps))


def _forbid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every host round trip of the training loop raise."""
    import warp as wp
    from s2r.sim.backends.warp import WarpBackend

    def no(what: str):
        def raise_(*args: object, **kwargs: object) -> None:
            raise AssertionError(f"host copy in the device-resident training loop: {what}")

        return raise_

    for name in ("numpy", "__array__"):
        monkeypatch.setattr(torch.Tensor, name, no(f"Tensor.{name}"))
    monkeypatch.setattr(torch, "from_numpy", no("torch.from_numpy"))
    tensor = torch.tensor

    def tensor_no_host_data(data: object, *args: object, **kwargs: object) -> torch.Tensor:
        # A Python scalar is a constant (Adam makes its step counters so); a list or array is host data.
        if isinstance(data, (list, tuple, np.ndarray)):
            raise AssertionError("host copy in the device-resident training loop: torch.tensor(host data)")
        return tensor(data, *args, **kwargs)

    monkeypatch.setattr(torch, "tensor", tensor_no_host_data)
    as_tensor = torch.as_tensor

    def as_tensor_no_numpy(data: object, *args: object, **kwargs: object) -> torch.Tensor:
        if isinstance(data, np.ndarray):
            raise AssertionError("host copy in the device-resident training loop: torch.as_tensor(ndarray)")
        return as_tensor(data, *args, **kwargs)

    monkeypatch.setattr(torch, "as_tensor", as_tensor_no_numpy)
    monkeypatch.setattr(wp.array, "numpy", no("wp.array.numpy"))
    for name in ("step", "_upload", "_download", "forward_sensors", "randomize"):
        monkeypatch.setattr(WarpBackend, name, no(f"WarpBackend.{name}"))


def test_training_iteration_stays_on_the_device(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = RunDriver(_spec(4, 32), tmp_path / "run", progress=False)
    try:
        trainer = driver.algo
        assert isinstance(trainer, PPOTrainer) and trainer.on_device
        env, alg = trainer.env, trainer.alg
        dev = torch.device(env.device)
        trainer._reset()  # the reset may touch the host once (Warp's forward at the start); the loop may not
        with monkeypatch.context() as m:
            _forbid(m)
            stats = trainer.iterate()
            stats2 = trainer.iterate()
        assert all(v.device == dev for v in trainer._obs.values())
        st = alg.storage
        assert all(t.device == dev for t in (st.actor_obs, st.critic_obs, st.actions, st.rewards, st.advantages))
        assert all(p.device == dev for p in alg.model.parameters())
        assert all(b.device == dev for b in alg.model.buffers())  # the normaliser's statistics
        assert alg.model.actor_norm.count.item() == 2 * 4 * 4  # both rollouts went into the normaliser
        for s in (stats, stats2):
            assert math.isfinite(s["value_loss"]) and math.isfinite(s["kl"]) and s["env_steps_per_s"] > 0
    finally:
        driver.close()


@pytest.mark.slow
def test_train_on_the_warp_backend_exports_a_policy(tmp_path) -> None:
    """The whole driver (budget, checkpoint, export of a CPU copy of the device model, plot) over the device path;
    slow only for Warp's CPU speed (about 25 env-steps/s on two loaded cores)."""
    calls = []
    original = PPOTrainer._iterate_on_device

    def counted(self: PPOTrainer) -> dict[str, float]:
        calls.append(1)
        return original(self)

    PPOTrainer._iterate_on_device = counted  # type: ignore[method-assign]
    try:
        result = train(_spec(4, 2 * 4 * 4), tmp_path / "run", progress=False)
    finally:
        PPOTrainer._iterate_on_device = original  # type: ignore[method-assign]
    assert len(calls) == 2 and result["progress"] >= 32
    assert (tmp_path / "run" / "policy.onnx").is_file() and (tmp_path / "run" / "policy.json").is_file()


def test_other_ppo_variants_keep_the_numpy_task(tmp_path) -> None:
    """A PPO subclass (the privileged teacher) reads numpy episode rows: it must not get the torch env."""
    spec = new_run_spec("ppo-teacher", TASK, task_overrides={"backend.name": "warp", "backend.device": DEVICE},
                        algo_overrides={"algo.steps_per_env": 2}, num_envs=2, seed=0, budget=Budget(steps=4))
    driver = RunDriver(spec, tmp_path / "run", progress=False)
    try:
        assert not driver.algo.on_device
        assert type(driver.algo.env).__name__ == "LocomotionEnv"
    finally:
        driver.close()


def test_masked_bootstrap_stores_what_the_indexed_one_does() -> None:
    """The device path selects time-out bootstraps with torch.where over every row; the numpy path indexes the
    timed-out rows. Same stored rewards, so the device path runs the PPO that tests/policies/test_learning.py
    shows learning."""
    import copy

    from s2r.policies.ppo import PPO, PPOConfig

    torch.manual_seed(0)
    a = PPO({"policy": 5, "privileged": 3}, 2, 6, PPOConfig(steps_per_env=2))
    b = copy.deepcopy(a)
    obs = {"policy": torch.randn(6, 5), "privileged": torch.randn(6, 3)}
    final = a.model.critic_input({"policy": torch.randn(6, 5), "privileged": torch.randn(6, 3)})
    rew = torch.randn(6)
    term = torch.tensor([False, True, False, False, False, False])
    trunc = torch.tensor([False, False, True, False, True, False])
    for ppo, masked in ((a, False), (b, True)):
        torch.manual_seed(1)
        ppo.act(obs)
        ppo.process_step(rew, term, trunc, final, masked=masked)
    # The value of 2 indexed rows and of all 6 rows come from matmuls of other shapes, whose float sums may be
    # blocked differently (CI saw last-bit differences): equal to float32 rounding, not bit for bit.
    torch.testing.assert_close(a.storage.rewards[0], b.storage.rewards[0], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(a.storage.rewards[0], rew)  # the time-outs did bootstrap
    assert torch.equal(a.storage.actions[0], b.storage.actions[0])
