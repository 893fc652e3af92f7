"""Data-parallel PPO over torch.distributed (gloo, two CPU processes): same weights on every rank, one run folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TASK = "Puck-Velocity-Flat"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, run_dir: str, out: str, steps: int, algo: str = "ppo") -> None:
    """One rank: join the group as torchrun would set it up, train, save this rank's weights."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    from s2r.policies.distributed import from_environment, shutdown
    from s2r.policies.driver import Budget, RunDriver, new_run_spec

    dist = from_environment()
    spec = new_run_spec(algo, TASK, algo_overrides={"torch_threads": 1}, num_envs=16, seed=3, budget=Budget(steps=steps))
    driver = RunDriver(spec, run_dir, progress=False, dist=dist)
    try:
        result = driver.learn()
        alg = driver.algo.alg
        torch.save({"params": [p.detach().clone() for p in alg.model.parameters()],
                    "buffers": [b.detach().clone() for b in alg.model.buffers()], "lr": alg.learning_rate,
                    "progress": driver.algo.progress, "result": result}, out)
    finally:
        driver.close()
        shutdown()


def _two_ranks(tmp_path: Path, algo: str, steps: int) -> tuple[Path, dict, dict]:
    import torch.multiprocessing as mp

    port = _free_port()
    run_dir = tmp_path / "run"
    outs = [str(tmp_path / f"rank{r}.pt") for r in range(2)]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_rank_main, args=(r, 2, port, str(run_dir), outs[r], steps, algo)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
        assert p.exitcode == 0, f"rank exited with {p.exitcode}"
    a, b = (torch.load(o, weights_only=False) for o in outs)
    for x, y in zip(a["params"] + a["buffers"], b["params"] + b["buffers"], strict=True):
        assert torch.equal(x, y)
    assert a["lr"] == b["lr"] and a["progress"] == b["progress"] == steps
    return run_dir, a, b


def test_the_privileged_teacher_trains_data_parallel(tmp_path: Path) -> None:
    """`--algo ppo-teacher` under torchrun (a GPU machine's cores split over ranks): one teacher, one folder."""
    steps = 2 * 2 * 16 * 24
    run_dir, a, b = _two_ranks(tmp_path, "ppo-teacher", steps)
    assert (run_dir / "teacher.pt").is_file() and (run_dir / "checkpoint.pt").is_file()
    assert "teacher_checkpoint" in a["result"]["export"] and b["result"]["rank"] == 1
    from s2r.policies.teacher import load_teacher

    teacher = load_teacher(run_dir)  # rank 0's export: the weights every rank holds
    for x, y in zip(teacher.model.parameters(), a["params"], strict=True):
        assert torch.equal(x, y)


def test_two_ranks_keep_identical_weights_and_one_run_folder(tmp_path: Path) -> None:
    # Three iterations of two ranks x 16 envs x 24 steps; the ranks collect different rollouts (seeded apart) yet
    # take the same averaged steps, and progress counts both ranks' steps (checked in _two_ranks).
    steps = 3 * 2 * 16 * 24
    run_dir, a, b = _two_ranks(tmp_path, "ppo", steps)
    # The weights moved (the update ran), and only rank 0 wrote the run folder.
    from s2r.policies.networks import ActorCritic, ActorCriticConfig
    from s2r.sim import make

    env = make(TASK, 1)
    torch.manual_seed(3)
    fresh = ActorCritic(env.obs_dims, env.spec.action_dim, ActorCriticConfig(critic_obs=("policy",)))
    env.close()
    assert any(not torch.equal(p, q) for p, q in zip(fresh.parameters(), a["params"], strict=False))
    assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "policy.onnx").is_file()
    assert a["result"]["export"]["max_abs_diff"] <= 1e-5 and b["result"]["rank"] == 1
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert ckpt["progress"] == steps


@pytest.mark.slow  # ~15 s: the two-rank test above covers data-parallel PPO; this one the torchrun entry point
def test_torchrun_cli(tmp_path: Path) -> None:
    """`torchrun --nproc_per_node 2 -m s2r.policies.cli train ...`: one folder, rank 0's output only."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ROS_DOMAIN_ID": "91"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master-port", str(_free_port()),
           "-m", "s2r.policies.cli", "train", TASK, "--num-envs", "16", "--steps", str(2 * 2 * 16 * 24),
           "--run-dir", str(run_dir), "--no-progress", "--train-set", "torch_threads=1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "data-parallel, 2 ranks over gloo" in out.stdout
    results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 1 and results[0]["progress"] == 2 * 2 * 16 * 24  # printed once, by rank 0
    assert (run_dir / "policy.onnx").is_file()
    assert json.loads((run_dir / "config.json").read_text())["algo"] == "ppo"


def test_other_algorithms_refuse_data_parallel(tmp_path: Path) -> None:
    from s2r.policies.algorithm import AlgorithmTaskMismatch
    from s2r.policies.distributed import DistInfo
    from s2r.policies.driver import RunDriver, new_run_spec

    spec = new_run_spec("sac", TASK)
    with pytest.raises(AlgorithmTaskMismatch, match="--algo sac does not run data-parallel"):
        RunDriver(spec, tmp_path / "x", progress=False, dist=DistInfo(rank=0, world_size=2, local_rank=0, backend="gloo"))
    assert not (tmp_path / "x").exists()


def test_world_size_without_torchrun_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    from s2r.policies.distributed import from_environment

    monkeypatch.setenv("WORLD_SIZE", "2")
    for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(RuntimeError, match="start data-parallel runs with torchrun"):
        from_environment()
