"""The image encoder of the off-policy learners: augmentation, who trains the encoder, persistence, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from s2r.policies.encoders import EncoderConfig, PixelEncoder, random_shift
from s2r.policies.offpolicy import ExportedActor, OffPolicyConfig, OffPolicyLearner
from s2r.policies.replay import Batch

SHAPES = {"policy": (3,), "image": (32, 32, 3)}
DTYPES = {"policy": "float32", "image": "uint8"}
ENC = EncoderConfig(image_groups=("image",), feature_dim=16, channels=8, num_layers=2, pad=4)
CFG = OffPolicyConfig(actor_hidden=(32,), critic_hidden=(32,), num_critics=2, batch_size=16, encoder=ENC)


# Reproducible and fair to the other tests sharing the machine (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(n: int = 16, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)

    def obs() -> dict[str, torch.Tensor]:
        return {"policy": torch.randn(n, 3, generator=g),
                "image": torch.randint(0, 256, (n, 32, 32, 3), generator=g, dtype=torch.uint8)}

    return Batch(obs=obs(), action=torch.rand(n, 2, generator=g) * 2 - 1, reward=torch.randn(n, generator=g),
                 next_obs=obs(), discount=torch.full((n,), 0.9))


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_random_shift_moves_each_image_by_at_most_pad_pixels_and_repeats_the_edge() -> None:
    images = torch.zeros(64, 20, 20, 1, dtype=torch.uint8)
    images[:, 10, 10] = 255  # one bright pixel in the middle
    shifted = random_shift(images, 3, torch.Generator().manual_seed(0))
    assert shifted.dtype == torch.uint8 and shifted.shape == images.shape
    moves = set()
    for img in shifted:
        (r,), (c,) = np.nonzero(img[..., 0].numpy() == 255)
        assert abs(r - 10) <= 3 and abs(c - 10) <= 3
        moves.add((int(r), int(c)))
    assert len(moves) > 10  # the offsets vary across the batch
    # Edge replication, not zero fill: a uniform frame stays uniform whatever the shift.
    flat = torch.full((8, 6, 6, 3), 77, dtype=torch.uint8)
    assert (random_shift(flat, 2, torch.Generator().manual_seed(1)) == 77).all()
    assert random_shift(images, 0) is images


def test_random_shift_equals_pad_and_crop() -> None:
    images = torch.randint(0, 256, (5, 9, 7, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    got = random_shift(images, 2, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    dx, dy = torch.randint(0, 5, (5,), generator=g), torch.randint(0, 5, (5,), generator=g)
    padded = torch.nn.functional.pad(images.permute(0, 3, 1, 2).float(), (2, 2, 2, 2), mode="replicate")
    want = torch.stack([padded[i, :, dy[i]:dy[i] + 9, dx[i]:dx[i] + 7] for i in range(5)]).permute(0, 2, 3, 1)
    assert torch.equal(got, want.to(torch.uint8))


def test_encoder_scales_uint8_inside_and_gives_bounded_features() -> None:
    enc = PixelEncoder({"a": (32, 32, 3), "b": (24, 24, 1)}, ENC)
    imgs = {"a": torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8),
            "b": torch.randint(0, 256, (4, 24, 24, 1), dtype=torch.uint8)}
    f = enc(imgs)
    assert f.shape == (4, 2 * ENC.feature_dim) and f.abs().max() <= 1.0
    # Same pixels as float 0..255 give the same features: the /255 happens inside the module.
    assert torch.allclose(enc({k: v.float() for k, v in imgs.items()}), f)


def test_critic_step_trains_the_encoder_and_the_actor_step_does_not() -> None:
    torch.manual_seed(0)
    learner = OffPolicyLearner(SHAPES, 2, CFG, obs_dtypes=DTYPES)
    batch = _batch()
    before = _params(learner.encoder)
    target_before = _params(learner.encoder_target)
    # The actor loss alone: no gradient reaches the encoder, and an actor step leaves it where it was.
    features = learner.features(batch.obs)
    loss, _ = learner._actor_loss(batch.obs, learner.alpha, features)
    learner.actor_optimizer.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in learner.encoder.parameters())
    actor_before = _params(learner.actor)
    learner.actor_optimizer.step()
    assert _same(_params(learner.encoder), before) and not _same(_params(learner.actor), actor_before)
    # A full update: the critic loss moves the encoder; the target encoder follows it by tau only.
    learner.update(batch)
    after = _params(learner.encoder)
    assert not _same(after, before)
    target_after = _params(learner.encoder_target)
    for a, tb, ta in zip(after, target_before, target_after, strict=True):
        assert torch.allclose(ta, tb + CFG.tau * (a - tb), atol=1e-6)


def test_acting_sees_frames_unaugmented_and_state_round_trips() -> None:
    torch.manual_seed(0)
    learner = OffPolicyLearner(SHAPES, 2, CFG, obs_dtypes=DTYPES)
    for seed in range(3):
        learner.update(_batch(seed=seed))
    obs = {k: v.numpy() for k, v in _batch(4, seed=9).obs.items()}
    a1, a2 = learner.act(obs, deterministic=True), learner.act(obs, deterministic=True)
    assert torch.equal(a1, a2)
    other = OffPolicyLearner(SHAPES, 2, CFG, obs_dtypes=DTYPES)
    other.load_state_dict(learner.state_dict())
    assert torch.equal(other.act(obs, deterministic=True), a1)
    exported = ExportedActor(learner)
    with torch.no_grad():
        got = exported(torch.as_tensor(obs["policy"]), torch.as_tensor(obs["image"]))
    assert torch.allclose(got, a1, atol=1e-6)
    with pytest.raises(ValueError, match="has no image encoder"):
        state = learner.state_dict()
        del state["encoder"]
        other.load_state_dict(state)


def test_bad_encoder_settings_are_refused_in_one_sentence() -> None:
    with pytest.raises(ValueError, match=r"image_groups must be a tuple of group names, got the string 'image'; "
                                         r"write \('image',\)"):
        EncoderConfig(image_groups="image")
    with pytest.raises(ValueError, match=r"EncoderConfig\.pad must be >= 0 pixels, got -1"):
        EncoderConfig(pad=-1)
    with pytest.raises(ValueError, match="names a group twice"):
        EncoderConfig(image_groups=("a", "a"))
    with pytest.raises(ValueError, match=r"encoder.image_groups names 'policy', which is \(3,\) float32, not a uint8"):
        OffPolicyLearner(SHAPES, 2, OffPolicyConfig(encoder=EncoderConfig(image_groups=("policy",))), obs_dtypes=DTYPES)
    with pytest.raises(ValueError, match=r"encoder\.image_groups names 'wrist', which the env does not provide"):
        OffPolicyLearner(SHAPES, 2, OffPolicyConfig(encoder=EncoderConfig(image_groups=("wrist",))), obs_dtypes=DTYPES)


def test_image_groups_come_from_a_command_line_string() -> None:
    from s2r.sim.config import apply_overrides

    cfg = apply_overrides(OffPolicyConfig(), {"encoder.image_groups": "image, wrist", "encoder.pad": "2"})
    assert cfg.encoder.image_groups == ("image", "wrist") and cfg.encoder.pad == 2
