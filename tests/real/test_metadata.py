"""policy.json schema v2: a round trip for every action and command kind, v1 files read and converted, and
the refusals (unknown v1 field, unknown kinds, wrong types, a mismatch with the robot), one sentence each."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from s2r.real.metadata import (
    ACTION_KINDS,
    COMMAND_KINDS,
    BoxAction,
    ChunkingSection,
    EeDeltaAction,
    JointPositionAction,
    MetadataError,
    NoCommand,
    ObsInput,
    PlannerSection,
    PolicyMetadata,
    ResidualSection,
    SegmentTimeRatioAction,
    TermSpec,
    VelocityCommand,
    WaypointsCommand,
    load_metadata,
    register_action_kind,
)
from s2r.real.robot import RobotConfig
from s2r.real.runner import PolicyMismatchError, PolicyRunner

from tests.policy_files import WALK_DIR, with_metadata

TIME_TO_WALK = WALK_DIR.parents[2] / "bench" / "results" / "time_to_walk" / "policy.json"


def _meta(action, command=None, **kw) -> PolicyMetadata:
    terms = (TermSpec(name="a", start=0, size=2, scale=(1.0, 0.5)), TermSpec(name="b", start=2, size=1, scale=(2.0,)))
    obs = ObsInput(name="obs", terms=terms, history_length=2, shape=(6,))
    return PolicyMetadata(task_id="X-Task-Flat", robot="X", algo="ppo", control_dt=0.02, observation=(obs,),
                          action=action, command=command or NoCommand(), **kw)


KINDS = {
    "joint_position": _meta(JointPositionAction(names=("j0", "j1"), scale=(0.25, 0.25), offset=(0.1, -0.2),
                                                default_pos=(0.1, -0.2), lower=(-1.0, -2.0), upper=(1.0, 2.0),
                                                kp=(20.0, 20.0), kv=(0.5, 0.5)),
                            VelocityCommand(vx=(-1.0, 1.0), vy=(-0.5, 0.5), wz=(-1.0, 1.0))),
    "ee_delta": _meta(EeDeltaAction(names=("ee_dx", "ee_dy", "ee_dz", "gripper"), max_step=0.02, clip=1.0,
                                    gripper_index=3, gripper_width=(0.0, 0.08)),
                      chunking=ChunkingSection(size=4, ensemble_m=0.1),
                      residual=ResidualSection(scale=0.1, base="runs/base", finetune=False), info={"note": [1, 2]}),
    "segment_time_ratio": _meta(SegmentTimeRatioAction(names=("s0", "s1"), max_ratio=3.0, max_waypoints=3),
                                WaypointsCommand(),
                                planner=PlannerSection(feasibility_dt=0.01, limits={"mass": 0.027, "max_tilt": None},
                                                       heuristic={"speed": 1.0})),
    "box": _meta(BoxAction(names=("torque",), low=(-2.0,), high=(2.0,), scale=(2.0,), offset=(0.0,))),
}


def test_every_kind_is_covered() -> None:
    assert set(KINDS) == set(ACTION_KINDS)
    assert {m.command.kind for m in KINDS.values()} == set(COMMAND_KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_round_trip(kind: str, tmp_path: Path) -> None:
    meta = KINDS[kind]
    meta.validate()
    path = tmp_path / "policy.json"
    path.write_text(meta.to_json())
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == 2 and raw["action"]["kind"] == kind and "extras" not in raw
    back = load_metadata(path)
    assert back == meta and type(back.action) is type(meta.action) and back.to_json() == meta.to_json()
    assert back.obs_dim == 6 and back.onnx_input == "obs" and back.action_names == meta.action.names


def test_image_input_round_trips(tmp_path: Path) -> None:
    image = ObsInput(name="image", group="image", shape=(84, 84, 3), dtype="uint8", camera="workspace")
    meta = dataclasses.replace(KINDS["ee_delta"], observation=(*KINDS["ee_delta"].observation, image))
    (tmp_path / "policy.json").write_text(meta.to_json())
    back = load_metadata(tmp_path / "policy.json")
    assert back.observation[1].is_image and back.observation[1].camera == "workspace" and back.obs_dim == 6


def test_a_kind_registered_twice_is_refused() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Twin(JointPositionAction):
        pass

    with pytest.raises(ValueError, match="action kind 'joint_position' is registered twice"):
        register_action_kind(Twin)
    assert ACTION_KINDS["joint_position"] is JointPositionAction


# ---- version 1 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [WALK_DIR / "policy.json", TIME_TO_WALK])
def test_committed_v1_files_convert(path: Path) -> None:
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == 1
    meta = load_metadata(path)
    assert meta.schema_version == 2 and meta.algo == "ppo" and meta.task_id == raw["task_id"]
    assert meta.obs_dim == raw["obs_dim"] and [t.name for t in meta.obs.terms] == [t["name"] for t in raw["obs_terms"]]
    act = meta.action
    assert isinstance(act, JointPositionAction) and act.names == tuple(raw["action_names"])
    assert (act.scale, act.offset, act.default_pos) == tuple(tuple(raw[k]) for k in
                                                              ("action_scale", "action_offset", "default_joint_pos"))
    assert (act.lower, act.upper, act.kp, act.kv) == tuple(tuple(raw[k]) for k in ("joint_lower", "joint_upper", "kp", "kv"))
    assert meta.command == VelocityCommand()  # a velocity_command term; v1 recorded no ranges
    assert meta.chunking is meta.residual is meta.planner is None and meta.info == {}


def _v1() -> dict:
    return json.loads((WALK_DIR / "policy.json").read_text())


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(data))
    return path


def test_v1_extras_become_typed_sections(tmp_path: Path) -> None:
    chunk = {"size": 4, "ensemble_m": 0.1, "state_input": "past_chunks", "mask_input": "past_mask", "state_output": "chunk"}
    residual = {"scale": 0.1, "base": "runs/base", "finetune": False}
    meta = load_metadata(_write(tmp_path, {**_v1(), "extras": {"chunk": chunk, "residual": residual, "episodes": 7}}))
    assert meta.chunking == ChunkingSection(**chunk) and meta.residual == ResidualSection(**residual)
    assert meta.algo == "residual" and meta.info == {"episodes": 7}
    meta = load_metadata(_write(tmp_path, {**_v1(), "extras": {"chunk": chunk}}))
    assert meta.algo == "bc" and meta.residual is None
    no_command, start = [], 0
    for term in _v1()["obs_terms"]:
        if term["name"] != "velocity_command":
            no_command.append({**term, "start": start})
            start += term["size"]
    assert load_metadata(_write(tmp_path, {**_v1(), "obs_terms": no_command, "obs_dim": 42})).command == NoCommand()


def test_v1_planner_converts(tmp_path: Path) -> None:
    from tests.planner_files import planner_metadata

    raw = planner_metadata(k=4, rounds=3)
    meta = load_metadata(_write(tmp_path, raw))
    assert meta.action == SegmentTimeRatioAction(names=tuple(raw["action_names"]), max_ratio=3.0, max_waypoints=4)
    assert meta.command == WaypointsCommand() and meta.algo == "mfrl" and meta.info == {"rounds": 3}
    assert meta.planner is not None and meta.planner.limits == raw["extras"]["limits"]


@pytest.mark.parametrize(("break_it", "expected"), [
    (lambda d: {**d, "velocity_limits": [1.0]}, "unknown field 'velocity_limits'"),
    (lambda d: {**d, "obs_terms": [{**d["obs_terms"][0], "offset": 2}, *d["obs_terms"][1:]]},
     "unknown field 'obs_terms[0].offset'"),
    (lambda d: {k: v for k, v in d.items() if k != "control_dt"}, "missing field 'control_dt'"),
    (lambda d: {**d, "obs_dim": 44}, "obs_dim 44 != sum of term sizes 45 x history_length 1"),
    (lambda d: {**d, "kp": d["kp"][:11]}, "'kp' has 11 values for 12 actions"),
    (lambda d: {**d, "kp": ["stiff"] * 12}, "'kp[0]' must be a number, got 'stiff'"),
    (lambda d: {**d, "obs_terms": [{**d["obs_terms"][0], "start": 1}, *d["obs_terms"][1:]]},
     "'base_ang_vel' starts at 1, expected 0"),
    (lambda d: {**d, "control_dt": 0.0}, "control_dt must be positive"),
    (lambda d: {**d, "extras": {"planner": "rrt"}}, "extras.planner is 'rrt'"),
    (lambda d: {**d, "extras": {"planner": "mfrl", "max_ratio": 3.0}}, "planner extras lack ['max_waypoints', 'limits']"),
    (lambda d: {**d, "extras": {"chunk": {"size": "4", "ensemble_m": 0.1}}}, "'extras.chunk.size' must be an integer"),
    (lambda d: {**d, "extras": {"residual": {"scale": 0.1, "base": "b", "finetune": False, "alpha": 1}}},
     "unknown field 'extras.residual.alpha'"),
])
def test_bad_v1_file_names_the_field(tmp_path: Path, break_it, expected: str) -> None:
    path = _write(tmp_path, break_it(_v1()))
    with pytest.raises(MetadataError) as err:
        load_metadata(path)
    assert expected in str(err.value) and str(path) in str(err.value)
    assert str(err.value).count(". ") == 0  # one sentence


# ---- the robot config ---------------------------------------------------------------------------


def test_a_policy_that_is_not_joint_position_is_refused_by_the_runner(go1_policy: Path, robot: RobotConfig,
                                                                      tmp_path: Path) -> None:
    names = load_metadata(go1_policy.with_suffix(".json")).action_names
    box = BoxAction(names=names, low=(-1.0,) * 12, high=(1.0,) * 12, scale=(1.0,) * 12, offset=(0.0,) * 12)
    bad = with_metadata(tmp_path / "box", go1_policy, action=box)
    with pytest.raises(PolicyMismatchError, match=r"has action kind 'box' but the joint policy runner drives "
                                                  r"'joint_position' policies only"):
        PolicyRunner(bad, robot)


def test_a_camera_input_the_graph_lacks_or_an_image_first_is_refused_by_the_runner(
        go1_policy: Path, robot: RobotConfig, tmp_path: Path) -> None:
    meta = load_metadata(go1_policy.with_suffix(".json"))
    image = ObsInput(name="image", group="image", shape=(64, 64, 3), dtype="uint8", camera="front")
    bad = with_metadata(tmp_path / "image", go1_policy, observation=(*meta.observation, image))
    with pytest.raises(PolicyMismatchError, match=r"has no graph input 'image' for camera 'front' \(inputs \['obs'\]\)"):
        PolicyRunner(bad, robot)
    first = with_metadata(tmp_path / "first", go1_policy, observation=(image, *meta.observation))
    with pytest.raises(PolicyMismatchError, match=r"takes observation inputs \['image', 'obs'\] \(uint8, float32\); "
                                                  r"the joint policy runner feeds one float32 vector first, then camera"):
        PolicyRunner(first, robot)


def test_ee_delta_gripper_fields_go_together(tmp_path: Path) -> None:
    raw = KINDS["ee_delta"].to_dict()
    raw["action"]["gripper_width"] = None
    (tmp_path / "policy.json").write_text(json.dumps(raw))
    with pytest.raises(MetadataError, match="gripper_index and gripper_width go together"):
        load_metadata(tmp_path / "policy.json")


def test_v1_policy_mismatching_the_robot_is_refused(robot: RobotConfig, tmp_path: Path) -> None:
    """The committed v1 walking policy, converted, meets the same robot checks as a v2 export."""
    import shutil

    PolicyRunner(WALK_DIR / "policy.onnx", robot)
    shutil.copy(WALK_DIR / "policy.onnx", tmp_path / "policy.onnx")
    _write(tmp_path, {**_v1(), "kp": [25.0] * 12})
    with pytest.raises(PolicyMismatchError, match=r"gain 'kp' of joint 'FR_hip_joint' is 25\.0 in"):
        PolicyRunner(tmp_path / "policy.onnx", robot)
