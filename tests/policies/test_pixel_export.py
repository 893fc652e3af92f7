"""A policy with an image encoder exports to one ONNX graph (uint8 camera input, encoder inside), matches onnxruntime,
lists the camera in policy.json, and runs on the robot side from numpy frames (the arm runner), refusing bad frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from s2r.policies.encoders import EncoderConfig
from s2r.policies.export import ExportError, build_metadata, export_onnx_checked, image_inputs
from s2r.policies.offpolicy import ExportedActor, OffPolicyConfig, OffPolicyLearner
from s2r.policies.replay import Batch
from s2r.real.arm import ArmState, load_any_robot_config
from s2r.real.arm_runner import ArmRunner
from s2r.real.metadata import load_metadata
from s2r.real.observation import CameraError
from s2r.sim import make, task_config

from tests.policy_files import PANDA_ROBOT, PANDA_TASK

SIZE = (32, 32)


# Reproducible and fair to the other tests sharing the machine (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExportedActor, dict[str, np.ndarray]]:
    """A Panda lift actor reading `policy` + a 32x32 `image`, a few updates in, exported with parity checked."""
    torch.manual_seed(0)
    env = make(PANDA_TASK, 1, cfg=task_config(PANDA_TASK, {"image": True, "image_size": SIZE}), seed=0)
    spec = env.spec
    env.close()
    dim, a_dim = spec.group_dim("policy"), spec.action_dim
    shapes = {"policy": (dim,), "image": spec.groups["image"].shape}
    cfg = OffPolicyConfig(actor_hidden=(32,), critic_hidden=(32,), num_critics=2, batch_size=8,
                          encoder=EncoderConfig(image_groups=("image",), feature_dim=16, channels=8, num_layers=2))
    learner = OffPolicyLearner(shapes, a_dim, cfg, obs_dtypes={"policy": "float32", "image": "uint8"})
    g = torch.Generator().manual_seed(0)

    def obs(n: int) -> dict[str, torch.Tensor]:
        return {"policy": torch.randn(n, dim, generator=g),
                "image": torch.randint(0, 256, (n, *SIZE, 3), generator=g, dtype=torch.uint8)}

    for _ in range(3):
        learner.update(Batch(obs=obs(8), action=torch.rand(8, a_dim, generator=g) * 2 - 1, reward=torch.randn(8, generator=g),
                             next_obs=obs(8), discount=torch.full((8,), 0.9)))
    actor = ExportedActor(learner)
    parity = {k: v.numpy() for k, v in obs(16).items()}
    meta = build_metadata(spec, PANDA_TASK, dim, algo="sac", images=image_inputs(spec, ("image",)))
    out = tmp_path_factory.mktemp("pixels")
    res = export_onnx_checked(actor, (torch.zeros(1, dim), torch.zeros(1, *SIZE, 3, dtype=torch.uint8)),
                              ["obs", "image"], ["actions"], out, {"obs": parity["policy"], "image": parity["image"]}, meta)
    assert res["max_abs_diff"] < 1e-5 and res["n"] == 16
    return out / "policy.onnx", actor, parity


def test_the_image_is_a_uint8_onnx_input_and_policy_json_names_its_camera(exported: tuple) -> None:
    import onnxruntime as ort

    path, _, _ = exported
    inputs = {i.name: i for i in ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()}
    assert inputs["image"].type == "tensor(uint8)" and inputs["image"].shape[1:] == [*SIZE, 3]
    meta = load_metadata(path.with_suffix(".json"))
    vec, img = meta.observation
    assert vec.name == "obs" and not vec.is_image
    assert (img.name, img.group, img.camera, img.dtype, tuple(img.shape)) == ("image", "image", "workspace", "uint8",
                                                                               (*SIZE, 3))


def test_the_arm_runner_feeds_numpy_frames_and_matches_torch(exported: tuple) -> None:
    path, actor, _ = exported
    arm = load_any_robot_config(PANDA_ROBOT)
    runner = ArmRunner(path, arm)
    assert runner.images.cameras == ("workspace",)
    state = ArmState.zeros(arm.num_joints, len(arm.gripper_joint_names))
    with pytest.raises(CameraError, match="camera 'workspace' has given no frame yet"):
        runner.infer(state, np.zeros(0), now=0.0)
    frame = np.random.default_rng(0).integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    runner.set_image("workspace", frame, stamp=0.0)
    got = runner.infer(state, np.zeros(0), now=0.1)
    vec = runner.builder.current_input
    with torch.no_grad():
        want = actor(torch.from_numpy(vec), torch.from_numpy(frame[None])).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    # A different picture gives a different action: the graph does read the camera.
    runner.set_image("workspace", 255 - frame, stamp=0.2)
    assert not np.allclose(runner.infer(state, np.zeros(0), now=0.3), got, atol=1e-6)
    # A camera that stopped, and frames of the wrong size or encoding, are refused in one sentence.
    with pytest.raises(CameraError, match=r"camera 'workspace' last gave a frame 0\.800 s ago \(allowed 0\.5 s\)"):
        runner.infer(state, np.zeros(0), now=1.0)
    with pytest.raises(CameraError, match=r"gave a uint8 frame of shape \(64, 64, 3\); the policy takes uint8 \(32, 32, 3\)"):
        runner.set_image("workspace", np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(CameraError, match=r"gave a float32 frame of shape \(32, 32, 3\)"):
        runner.set_image("workspace", np.zeros((*SIZE, 3), np.float32))
    with pytest.raises(CameraError, match=r"camera 'wrist' is not an input of this policy; it reads \['workspace'\]"):
        runner.set_image("wrist", frame)


def test_image_inputs_refuse_a_group_that_is_not_an_image() -> None:
    env = make(PANDA_TASK, 1, seed=0)
    spec = env.spec
    env.close()
    with pytest.raises(ExportError, match="observation group 'policy' is not an image group of this task"):
        image_inputs(spec, ("policy",))


@pytest.mark.slow
def test_sac_from_pixels_through_the_run_driver_exports_the_camera(tmp_path: Path) -> None:
    """`s2r train Panda-Lift-Cube --algo sac` with the encoder on: replay keeps images, export reads the camera."""
    from s2r.policies.driver import Budget, new_run_spec, train

    overrides = {"torch_threads": 1, "learning_starts": 50, "steps_per_iteration": 25, "eval_episodes": 1,
                 "eval_every": 0, "buffer_capacity": 1000, "learner.batch_size": 16, "learner.actor_hidden": (32,),
                 "learner.critic_hidden": (32,), "learner.encoder.image_groups": "image", "learner.encoder.channels": 8,
                 "learner.encoder.num_layers": 2, "learner.encoder.feature_dim": 16}
    spec = new_run_spec("sac", PANDA_TASK, task_overrides={"image": True, "image_size": SIZE}, algo_overrides=overrides,
                        num_envs=2, budget=Budget(steps=100))
    res = train(spec, tmp_path / "run", progress=False)
    assert res["export"]["max_abs_diff"] < 1e-5
    meta = load_metadata(tmp_path / "run" / "policy.json")
    assert [(o.name, o.camera) for o in meta.observation] == [("obs", None), ("image", "workspace")]
    from s2r.policies.evaluate import evaluate_success

    assert evaluate_success(tmp_path / "run", episodes=2)["episodes"] == 2  # the exported policy runs from the camera


def test_sac_refuses_an_encoder_group_the_task_does_not_render() -> None:
    from s2r.policies.algorithm import AlgorithmTaskMismatch
    from s2r.policies.sac import SACConfig, check_spec

    env = make(PANDA_TASK, 1, seed=0)  # no camera enabled
    spec = env.spec
    env.close()
    cfg = SACConfig(learner=OffPolicyConfig(encoder=EncoderConfig(image_groups=("image",))))
    with pytest.raises(AlgorithmTaskMismatch, match=r"names 'image', which is not an image group of task 'Panda-Lift-Cube' "
                                                    r"\(its image groups: none; enable its camera\)"):
        check_spec(PANDA_TASK, spec, cfg, "sac")


def test_object_in_policy_false_leaves_the_object_to_the_camera() -> None:
    cfg = task_config(PANDA_TASK, {"object_in_policy": False, "image": True, "image_size": SIZE})
    env = make(PANDA_TASK, 1, cfg=cfg, seed=0)
    names = [t.name for t in env.spec.obs_terms["policy"]]
    env.close()
    assert "object_pos" not in names and "object_rel_ee" not in names and "ee_pos" in names


def test_the_evaluator_feeds_camera_inputs_from_the_obs_dict(exported: tuple) -> None:
    from s2r.policies.evaluate import OnnxPolicy
    from s2r.real.metadata import MetadataError

    path, actor, parity = exported
    policy = OnnxPolicy(path.parent)
    assert policy.reads_groups
    got = policy({"policy": parity["policy"], "image": parity["image"], "privileged": np.zeros((16, 3))})
    with torch.no_grad():
        want = actor(torch.from_numpy(parity["policy"]), torch.from_numpy(parity["image"])).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(MetadataError, match=r"also reads cameras \['workspace'\]: call it with the env's observation"):
        policy(parity["policy"])


def test_residual_refuses_the_encoder(tmp_path: Path) -> None:
    from s2r.policies.algorithm import AlgorithmTaskMismatch
    from s2r.policies.driver import Budget, new_run_spec, train

    spec = new_run_spec("residual", "Panda-PickPlace-Cube", algo_overrides={"learner.encoder.image_groups": "image"},
                        budget=Budget(steps=10))
    with pytest.raises(AlgorithmTaskMismatch, match=r"^residual learns from vector groups only for now; learner.encoder."
                                                    r"image_groups \['image'\] is read by sac, td3 and hil"):
        train(spec, tmp_path / "run", progress=False)
