"""The off-policy learner reads vector groups only: an image group it would read is refused in one sentence,
and one it does not read rides along in the replay buffer without getting in the way."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from s2r.policies.offpolicy import OffPolicyConfig, OffPolicyLearner
from s2r.policies.replay import ReplayBuffer

SHAPES = {"policy": (5,), "image": (84, 84, 3)}
DTYPES = {"policy": "float32", "image": "uint8"}
SMALL = {"actor_hidden": (16,), "critic_hidden": (16,), "num_critics": 2, "batch_size": 8}


def test_an_image_group_it_reads_is_refused_in_one_sentence() -> None:
    msg = (r"^OffPolicyLearner reads vector observations only; group 'image' is \(84, 84, 3\) uint8 — drop it from "
           r"actor_obs/critic_obs or use an image encoder$")
    for cfg in (OffPolicyConfig(critic_obs=("policy", "image"), **SMALL), OffPolicyConfig(actor_obs=("image",), **SMALL)):
        with pytest.raises(ValueError, match=msg):
            OffPolicyLearner(SHAPES, 2, cfg, obs_dtypes=DTYPES)
    with pytest.raises(ValueError, match=r"group 'history' is \(3, 5\) float32 — drop it"):
        OffPolicyLearner({"policy": 5, "history": (3, 5)}, 2, OffPolicyConfig(actor_obs=("history",), **SMALL))
    with pytest.raises(ValueError, match="observation group 'privileged' is not provided by the env"):
        OffPolicyLearner(SHAPES, 2, OffPolicyConfig(critic_obs=("privileged",), **SMALL), obs_dtypes=DTYPES)


def test_an_image_group_it_does_not_read_rides_along() -> None:
    learner = OffPolicyLearner(SHAPES, 2, OffPolicyConfig(**SMALL), obs_dtypes=DTYPES)
    buf = ReplayBuffer(SHAPES, 2, capacity=64, num_envs=4, obs_dtypes=DTYPES)
    rng = np.random.default_rng(0)
    for _ in range(8):
        o = {"policy": rng.normal(size=(4, 5)).astype(np.float32),
             "image": rng.integers(0, 256, (4, 84, 84, 3), dtype=np.uint8)}
        buf.add(o, learner.act(o).numpy(), rng.normal(size=4), o, np.zeros(4, bool), np.zeros(4, bool))
    batch = buf.sample(8, generator=torch.Generator().manual_seed(0))
    assert batch.obs["image"].dtype == torch.uint8 and batch.obs["image"].shape == (8, 84, 84, 3)
    metrics = learner.update_from(buf, generator=torch.Generator().manual_seed(0))
    assert np.isfinite(metrics["critic_loss"])
