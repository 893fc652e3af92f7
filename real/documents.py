"""Reading the robot side's config files (policy.json, robot YAML, deployment manifests) with one set of errors.

Standard library + PyYAML only (the robot's base install). Every failure names the file and says what to do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_document(path: str | Path, error: type[Exception], what: str, missing_hint: str) -> Any:
    """Parse a .json file with json and anything else as YAML.

    Args:
        path: File to read.
        error: Exception class to raise (the caller's own, so callers catch what they know).
        what: What the file is, for the message ("policy metadata", "robot config", "manifest").
        missing_hint: Said after "not found: <path>", e.g. "(export writes it next to policy.onnx)".

    Raises:
        error: The file is missing or does not parse.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path} {missing_hint}")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise error(f"{path} is not valid JSON: {exc}") from exc
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path} is not valid YAML: {exc}") from exc

