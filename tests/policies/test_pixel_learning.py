"""The off-policy learner learns from pixels: the rewarded action depends on where a coloured square is in the image,
which the state group does not say. Trained from replay with the encoder and random-shift augmentation on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from s2r.policies.encoders import EncoderConfig
from s2r.policies.offpolicy import OffPolicyConfig, OffPolicyLearner
from s2r.policies.replay import ReplayBuffer

SIZE = 32
SQUARE = 10
SHAPES = {"policy": (2,), "image": (SIZE, SIZE, 3)}
DTYPES = {"policy": "float32", "image": "uint8"}


# Reproducible and fair to the other tests sharing the machine (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def square_frames(rng: np.random.Generator, n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Grey frames with a red 10x10 square in the left or right half (anywhere in it); side -1 (left) or +1 (right).

    The state group is noise: only the image says which side is rewarded.
    """
    side = rng.choice([-1.0, 1.0], n)
    images = np.full((n, SIZE, SIZE, 3), 90, dtype=np.uint8)
    for i, s in enumerate(side):
        x = rng.integers(0, SIZE // 2 - SQUARE + 1) + (SIZE // 2 if s > 0 else 0)
        y = rng.integers(0, SIZE - SQUARE + 1)
        images[i, y:y + SQUARE, x:x + SQUARE] = (220, 30, 30)
    return {"policy": rng.normal(size=(n, 2)).astype(np.float32), "image": images}, side


def success_rate(learner: OffPolicyLearner, seed: int) -> float:
    obs, side = square_frames(np.random.default_rng(seed), 200)
    action = learner.act(obs, deterministic=True).numpy()[:, 0]
    return float(np.mean(np.sign(action) == side))


def test_learns_from_the_image_what_the_state_does_not_say() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    # Small enough for the default suite; with these settings seeds 0-3 all reach 100 % within 120 updates.
    enc = EncoderConfig(image_groups=("image",), feature_dim=16, channels=8, num_layers=2, pad=2)
    cfg = OffPolicyConfig(actor_hidden=(64,), critic_hidden=(64,), num_critics=2, batch_size=32, critic_lr=1e-3,
                          actor_lr=1e-3, init_alpha=0.1, encoder=enc)
    learner = OffPolicyLearner(SHAPES, 1, cfg, obs_dtypes=DTYPES)
    before = success_rate(learner, seed=1)
    # One-step episodes (a contextual bandit): reward = action * side, so the best action is the square's side.
    buf = ReplayBuffer(SHAPES, 1, capacity=1024, num_envs=64, obs_dtypes=DTYPES)
    for _ in range(8):
        obs, side = square_frames(rng, 64)
        action = rng.uniform(-1.0, 1.0, (64, 1)).astype(np.float32)
        buf.add(obs, action, action[:, 0] * side, obs, np.ones(64, bool), np.zeros(64, bool))
    gen = torch.Generator().manual_seed(0)
    learner.update_from(buf, num_updates=150, generator=gen)
    after = success_rate(learner, seed=1)
    assert before < 0.75  # an untrained actor is near chance (0.5) on held-out frames
    assert after >= 0.9, f"success {after:.2f} after training (untrained {before:.2f})"
