"""Versioned calibration YAML: round trips and clear refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from s2r.calibration.schema import (
    ActuatorCalibration,
    ActuatorGroup,
    CalibrationError,
    CameraIntrinsics,
    HandEye,
    actuators_to_dict,
    camera_to_dict,
    hand_eye_to_dict,
    load_calibration,
    matrix_to_quat,
    quat_to_matrix,
    write_calibration,
)

CAM = CameraIntrinsics(image_size=(640, 480), camera_matrix=((600.0, 0.0, 320.0), (0.0, 601.0, 240.0), (0.0, 0.0, 1.0)),
                       dist_coeffs=(-0.1, 0.05, 0.001, 0.0, 0.0), rms_px=0.1)


def test_round_trips(tmp_path: Path) -> None:
    p = write_calibration(tmp_path / "c.yaml", "camera_intrinsics", camera_to_dict(CAM), source="test")
    assert load_calibration(p, "camera_intrinsics") == CAM
    q = matrix_to_quat(quat_to_matrix(np.array([0.9, 0.1, -0.3, 0.2])))
    he = HandEye(mode="eye_in_hand", parent_frame="flange", child_frame="camera", translation_m=(0.01, 0.02, 0.03),
                 quaternion_wxyz=tuple(q), solver="tsai")
    p = write_calibration(tmp_path / "h.yaml", "hand_eye", hand_eye_to_dict(he), source="test")
    back = load_calibration(p, "hand_eye")
    np.testing.assert_allclose(back.matrix, he.matrix, atol=1e-9)
    act = ActuatorCalibration(model="go1.xml", latency_s=0.004, timestep_s=0.001, groups=(
        ActuatorGroup(name="knee", joints=("*_calf_joint",), kp=30.0, kv=0.6, frictionloss=0.3, damping=0.1,
                      armature=0.01, kp_nominal=35.0, kv_nominal=0.5),))
    p = write_calibration(tmp_path / "a.yaml", "actuators", actuators_to_dict(act), source="test", report={"x": 1})
    assert load_calibration(p, "actuators") == act
    assert yaml.safe_load(p.read_text())["schema_version"] == 1


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda d: d.pop("schema_version"), "schema_version"),
    (lambda d: d.update(schema_version=99), "schema_version 99 is not supported"),
    (lambda d: d.update(kind="hand_eye"), "is needed here"),
    (lambda d: d["camera_intrinsics"].pop("dist_coeffs"), "'camera_intrinsics.dist_coeffs' is missing"),
    (lambda d: d["camera_intrinsics"].update(camera_matrix=[[1, 2], [3, 4]]), "3x3"),
    (lambda d: d["camera_intrinsics"].update(image_size=[640, "x"]), "image_size"),
])
def test_invalid_files_name_the_file_and_field(tmp_path: Path, edit, needle: str) -> None:
    p = write_calibration(tmp_path / "c.yaml", "camera_intrinsics", camera_to_dict(CAM), source="test")
    doc = yaml.safe_load(p.read_text())
    edit(doc)
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(CalibrationError) as exc:
        load_calibration(p, "camera_intrinsics")
    assert str(p) in str(exc.value) and needle in str(exc.value)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match=r"no such calibration file.*s2r calibrate actuators"):
        load_calibration(tmp_path / "nope.yaml", "actuators")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(CalibrationError, match="not valid YAML"):
        load_calibration(bad, "camera_intrinsics")
