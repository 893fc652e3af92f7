"""Fixtures shared by the whole suite.

MuJoCo picks its OpenGL backend when it is first imported, so EGL (headless) is chosen here, before any
test module imports mujoco, unless the caller already chose one.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.training_runs import tiny_run_spec


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per core, at most 4.

    Each worker builds the session fixtures again and takes a block of DDS domains (tests/ros/conftest.py), so
    more workers than that cost memory and domains without shortening a suite whose longest file takes ~1 min.
    """
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Go1 run trained for two PPO iterations: checkpoint.pt, history.json, policy.onnx, policy.json.

    Shared by many tests, so treat it as read-only; `tiny_run_copy` gives a private copy.
    """
    from s2r.policies.driver import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    spec = tiny_run_spec()
    result = train(spec, run_dir, progress=False)
    assert result["progress"] == spec.budget.steps and not result["interrupted"]
    return run_dir


@pytest.fixture
def tiny_run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """A private copy of `tiny_run` that a test may resume, overwrite or break."""
    dst = tmp_path / "run"
    shutil.copytree(tiny_run, dst)
    return dst


@pytest.fixture
def renderer_or_skip() -> None:
    """Skip the test, saying why, when MuJoCo cannot create an offscreen OpenGL context here."""
    import mujoco

    model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='1'/></worldbody></mujoco>")
    try:
        renderer = mujoco.Renderer(model, 32, 32)
    except Exception as exc:  # no EGL/OSMesa library, no GPU or software driver
        pytest.skip(f"offscreen rendering unavailable with MUJOCO_GL={os.environ.get('MUJOCO_GL')}: "
                    f"{type(exc).__name__}: {exc}")
    renderer.close()


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread for the test (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`): reproducible
    and fair to the other tests sharing the machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
