"""bench/terrain_teacher.py's device mode: chunks trained and snapshotted without evaluation (`--no-eval`), then
judged afterwards (`--eval-chunks`) from the run folder alone, as after a GPU lease."""

from __future__ import annotations

import json
import sys

import pytest

from tests.bench_modules import load_bench


def run(monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["terrain_teacher.py", *args])
    load_bench("terrain_teacher").main()


def test_snapshots_without_evaluation_are_judged_afterwards(tmp_path, monkeypatch) -> None:
    runs, out = tmp_path / "run", tmp_path / "teacher"
    common = ["--run-dir", str(runs), "--out", str(out)]
    run(monkeypatch, "--num-envs", "4", "--minutes", "0.02", "--chunk", "0.02", "--no-eval", "--threads", "1", *common)
    result = json.loads(out.with_suffix(".json").read_text())
    assert len(result["chunks"]) == 1 and "walks" not in result["chunks"][0]
    assert result["backend"] == "cpu" and result["machine"]["cores"] >= 1
    assert (runs / "chunks" / "c0" / "teacher.pt").is_file()

    run(monkeypatch, "--eval-chunks", "--episodes", "6", *common)
    row = json.loads(out.with_suffix(".json").read_text())["chunks"][0]
    assert row["walks"] in (0.0, 1.0) and 0.0 <= row["fall_rate"] <= 1.0 and row["mean_vel_error"] >= 0.0
    assert set(row["per_type"]) and out.with_suffix(".png").is_file()

    # The run folder moved (e.g. unpacked elsewhere): the snapshots are found under --run-dir, or named.
    with pytest.raises(SystemExit, match=r"no teacher\.pt in .*pass the run folder as --run-dir"):
        data = json.loads(out.with_suffix(".json").read_text())
        del data["chunks"][0]["walks"]
        out.with_suffix(".json").write_text(json.dumps(data))
        run(monkeypatch, "--eval-chunks", "--run-dir", str(tmp_path / "elsewhere"), "--out", str(out))
    with pytest.raises(SystemExit, match="does not exist; pass the --out of a terrain_teacher run"):
        run(monkeypatch, "--eval-chunks", "--out", str(tmp_path / "missing"))


@pytest.mark.slow  # ~50 s: two torchrun chunks of two ranks
def test_chunks_train_data_parallel_and_resume(tmp_path, monkeypatch) -> None:
    runs, out = tmp_path / "run", tmp_path / "teacher"
    run(monkeypatch, "--ranks", "2", "--num-envs", "4", "--minutes", "0.4", "--chunk", "0.2", "--no-eval",
        "--run-dir", str(runs), "--out", str(out))
    result = json.loads(out.with_suffix(".json").read_text())
    steps = [c["env_steps"] for c in result["chunks"]]
    assert result["ranks"] == 2 and len(steps) == 2 and 0 < steps[0] < steps[1]  # the second chunk resumed
    assert (runs / "chunks" / "c1" / "teacher.pt").is_file()
