"""Policy files for robot-side tests: a real export of an untrained Go1 actor, and small ONNX graphs
built with onnx.helper that misbehave on purpose (NaN output, wrong width) under the same metadata."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GO1_ROBOT = REPO / "launch" / "robots" / "go1.yaml"
WALK_DIR = REPO / "tests" / "data" / "go1_walk"
TASK = "Go1-Velocity-FlatNoDR"
GO1_JOINTS = tuple(f"{leg}_{part}_joint" for leg in ("FR", "FL", "RR", "RL") for part in ("hip", "thigh", "calf"))


def export_untrained_go1(out_dir: Path, seed: int = 0) -> Path:
    """Export an untrained actor for the Go1 task through the real export path; returns policy.onnx."""
    import torch
    from s2r.policies.export import export_policy
    from s2r.policies.networks import ActorCritic, ActorCriticConfig
    from s2r.sim import make
    from s2r.sim.env import sample_obs

    torch.manual_seed(seed)
    env = make(TASK, 2, seed=seed)
    try:
        model = ActorCritic(env.obs_dims, env.spec.action_dim, ActorCriticConfig()).eval()
        obs = sample_obs(env, 5, seed=seed)["policy"]
        export_policy(model, env.spec, TASK, out_dir, obs)
    finally:
        env.close()
    return Path(out_dir) / "policy.onnx"


PANDA_ROBOT = REPO / "launch" / "robots" / "panda.yaml"
PANDA_TASK = "Panda-Lift-Cube"


def export_untrained_panda(out_dir: Path, seed: int = 0) -> Path:
    """Export an untrained actor for the Panda lift task (action kind ee_delta); returns policy.onnx."""
    import torch
    from s2r.policies.export import export_policy
    from s2r.policies.networks import ActorCritic, ActorCriticConfig
    from s2r.sim import make
    from s2r.sim.env import sample_obs

    torch.manual_seed(seed)
    env = make(PANDA_TASK, 2, seed=seed)
    try:
        model = ActorCritic(env.obs_dims, env.spec.action_dim, ActorCriticConfig()).eval()
        obs = sample_obs(env, 5, seed=seed)["policy"]
        export_policy(model, env.spec, PANDA_TASK, out_dir, obs)
    finally:
        env.close()
    return Path(out_dir) / "policy.onnx"


def export_untrained_panda_camera(out_dir: Path, size: tuple[int, int] = (32, 32), seed: int = 0) -> Path:
    """Export an untrained Panda lift actor that reads `policy` and a `size` camera image (the learners' conv
    encoder inside the graph, uint8 input) through the real export path, parity checked; returns policy.onnx.

    The actor is put together from the encoder and an MLP rather than a whole learner: a learner builds its
    optimisers, whose import of torch's compiler costs seconds a test does not need.
    """
    import torch
    from s2r.policies.encoders import EncoderConfig, PixelEncoder
    from s2r.policies.export import build_metadata, export_onnx_checked, image_inputs
    from s2r.sim import make, task_config

    torch.manual_seed(seed)
    env = make(PANDA_TASK, 1, cfg=task_config(PANDA_TASK, {"image": True, "image_size": size}), seed=seed)
    spec = env.spec
    env.close()
    dim = spec.group_dim("policy")

    class CameraActor(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            enc = EncoderConfig(image_groups=("image",), feature_dim=16, channels=8, num_layers=2)
            self.encoder = PixelEncoder({"image": spec.groups["image"].shape}, enc)
            self.mlp = torch.nn.Sequential(torch.nn.Linear(16 + dim, 32), torch.nn.ReLU(),
                                           torch.nn.Linear(32, spec.action_dim))

        def forward(self, obs: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.mlp(torch.cat([self.encoder({"image": image}), obs], dim=-1)))

    g = torch.Generator().manual_seed(seed)
    parity = {"obs": torch.randn(8, dim, generator=g).numpy(),
              "image": torch.randint(0, 256, (8, *size, 3), generator=g, dtype=torch.uint8).numpy()}
    meta = build_metadata(spec, PANDA_TASK, dim, algo="sac", images=image_inputs(spec, ("image",)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    export_onnx_checked(CameraActor().eval(), (torch.zeros(1, dim), torch.zeros(1, *size, 3, dtype=torch.uint8)),
                        ["obs", "image"], ["actions"], out, parity, meta)
    return out / "policy.onnx"


def write_graph(out_dir: Path, source: Path, kind: str, seed: int = 0) -> Path:
    """A hand-built ONNX graph beside a copy of `source`'s policy.json.

    kind: "small" (tanh of a small linear map: stands near the default pose), "nan" (always NaN),
    "wide" (declares and outputs one action too few), "dynamic_wide" (declares a symbolic width, outputs
    one too few at run time).
    """
    import onnx
    from onnx import TensorProto, helper
    from s2r.real.metadata import load_metadata

    meta = load_metadata(source.with_suffix(".json"))
    n_in, n_out = meta.obs_dim, len(meta.action_names)
    width = n_out - 1 if kind in ("wide", "dynamic_wide") else n_out
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n_in, width)) * 0.01).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["obs", "W"], ["h"]), helper.make_node("Tanh", ["h"], ["t"])]
    inits = [helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.ravel())]
    out_shape: list[object] = ["batch", width]
    if kind == "nan":
        inits.append(helper.make_tensor("bad", TensorProto.FLOAT, [width], [np.nan] * width))
        nodes.append(helper.make_node("Add", ["t", "bad"], ["actions"]))
    elif kind == "dynamic_wide":
        # Flattened, so no static width survives shape inference: only running the graph shows 11 values.
        inits.append(helper.make_tensor("flat", TensorProto.INT64, [1], [-1]))
        nodes.append(helper.make_node("Reshape", ["t", "flat"], ["actions"]))
        out_shape = ["n"]
    else:
        nodes.append(helper.make_node("Identity", ["t"], ["actions"]))
    graph = helper.make_graph(
        nodes, f"s2r_test_{kind}",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out / "policy.onnx"))
    shutil.copy(source.with_suffix(".json"), out / "policy.json")
    return out / "policy.onnx"


def with_obs(meta, **changes: object):
    """`meta` (a PolicyMetadata) with its main observation input's fields changed (terms, shape, history_length)."""
    return dataclasses.replace(meta, observation=(dataclasses.replace(meta.obs, **changes), *meta.observation[1:]))


def with_metadata(out_dir: Path, source: Path, **changes: object) -> Path:
    """A copy of a policy whose policy.json has some fields changed (e.g. control_dt, observation, action)."""
    from s2r.real.metadata import load_metadata

    meta = dataclasses.replace(load_metadata(source.with_suffix(".json")), **changes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, out / "policy.onnx")
    (out / "policy.json").write_text(meta.to_json())
    return out / "policy.onnx"
