"""`s2r calibrate ...` end to end: files in, YAML + text + PNG out; bad input is one line and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from s2r.calibration.schema import load_calibration
from s2r.policies.cli import main

from tests.calibration.conftest import HandEyeSet, ImageSet


def test_camera_and_hand_eye(intrinsics_set: ImageSet, eye_in_hand_set: HandEyeSet, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "camera.yaml"
    assert main(["calibrate", "camera", "--images", str(intrinsics_set.folder), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "RMS error" in text and "camera calibration took" in text
    assert out.with_suffix(".png").is_file() and out.with_suffix(".txt").is_file()
    fx = load_calibration(out, "camera_intrinsics").intrinsic_matrix[0, 0]
    assert abs(fx / intrinsics_set.cam.fx - 1) < 0.005
    he = tmp_path / "hand_eye.yaml"
    # Hand-eye on the intrinsics just calibrated, as one would on a real robot.
    assert main(["calibrate", "hand-eye", "--images", str(eye_in_hand_set.folder), "--camera", str(out),
                 "--out", str(he)]) == 0
    assert "consistency   OK" in capsys.readouterr().out
    assert load_calibration(he, "hand_eye").mode == "eye_in_hand"


def test_excite_then_actuators(leg_log_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ex = tmp_path / "excite.csv"
    assert main(["calibrate", "excite", "--joints", "FR_hip_joint,FR_thigh_joint,FR_calf_joint", "--seconds", "4",
                 "--out", str(ex)]) == 0
    assert "safety check passed" in capsys.readouterr().out and ex.with_suffix(".png").is_file()
    out = tmp_path / "act.yaml"
    assert main(["calibrate", "actuators", str(leg_log_csv), "--max-iterations", "2", "--out", str(out)]) == 0
    assert "fit error" in capsys.readouterr().out
    assert len(load_calibration(out, "actuators").groups) == 3


@pytest.mark.parametrize(("argv", "needle"), [
    (["calibrate", "camera", "--images", "no/such/folder"], "no/such/folder: no such image folder"),
    (["calibrate", "actuators", "no_log.csv"], "no_log.csv: no such log file"),
    (["calibrate", "excite", "--joints", "FR_elbow"], "joint(s) ['FR_elbow'] are not actuated joints of go1.xml"),
    (["calibrate", "camera", "--images", ".", "--squares", "9by6"], None),
])
def test_bad_input_is_one_clear_line(argv: list[str], needle: str | None, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    if needle is None:  # a folder of images exists but the --squares value is malformed
        import cv2
        import numpy as np

        cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8), np.uint8))
        argv = ["calibrate", "camera", "--images", str(tmp_path), "--squares", "9by6"]
        needle = "--squares wants COLSxROWS"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("s2r: error: ") and needle in err and "\n" not in err


def test_light_imports() -> None:
    """`s2r --help` loads no OpenCV/SciPy/MuJoCo for calibration; camera calibration needs no MuJoCo or SciPy."""
    import subprocess
    import sys

    code = ("import sys; import s2r.calibration.camera, s2r.calibration.hand_eye, s2r.calibration.images; "
            "assert 'mujoco' not in sys.modules and 'scipy' not in sys.modules, 'heavy import'; "
            "import s2r.calibration.cli, s2r.calibration.schema; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
    code = "import sys; import s2r.calibration.cli; assert 'cv2' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
