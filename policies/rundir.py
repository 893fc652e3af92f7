"""The run folder, as one typed object: every file a run writes has one name and one reader here.

    runs/<task>/<algo>_<stamp>/
        config.json            what was asked for: format, algorithm id, task id, task and algorithm configs, budget
        checkpoint.pt          the learner's state (atomic: written to a temp file, then renamed)
        history.json           one row of statistics per logged iteration
        policy.onnx, policy.json  the export and its metadata contract
        learning_curve.png     the curve the algorithm names, against wall clock
        replay/                transitions as they arrive (off-policy algorithms), the durable part of a run
        events.out.tfevents.*  TensorBoard
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_FORMAT = 2


class RunDirError(ValueError):
    """A run folder that is missing a file or holds something this version cannot use."""


def write_json_atomic(obj: Any, path: Path) -> None:
    """Write JSON to a temp file beside `path`, then rename it over (readers never see half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


@dataclass(frozen=True)
class RunDir:
    """Paths and readers of one run folder."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def history(self) -> Path:
        return self.path / "history.json"

    @property
    def policy_onnx(self) -> Path:
        return self.path / "policy.onnx"

    @property
    def policy_json(self) -> Path:
        return self.path / "policy.json"

    @property
    def curve_png(self) -> Path:
        return self.path / "learning_curve.png"

    @property
    def replay(self) -> Path:
        return self.path / "replay"

    def exists(self) -> bool:
        return self.config.is_file()

    def read_config(self) -> dict[str, Any]:
        """config.json as a dict; raises RunDirError naming the file when it is missing or unreadable."""
        return self._read_json(self.config, "has no config.json: it is not an s2r run folder")

    def read_history(self) -> list[dict[str, Any]]:
        """history.json rows, or [] when the run has logged nothing yet."""
        if not self.history.is_file():
            return []
        return self._read_json(self.history, "")

    def write_config(self, cfg: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic({"format": RUN_FORMAT, **cfg}, self.config)

    def write_history(self, rows: list[dict[str, Any]]) -> None:
        write_json_atomic(rows, self.history)

    def _read_json(self, path: Path, missing: str) -> Any:
        if not path.is_file():
            raise RunDirError(f"{self.path} {missing}".strip())
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RunDirError(f"cannot read {path}: {exc}; the run folder is damaged") from exc
