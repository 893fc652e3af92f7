"""Image encoders for learning from pixels: a DrQ/SERL-style conv encoder per camera and random-shift augmentation.

- `conv_stack` is the conv trunk shared with the reward classifier (`s2r.policies.reward_classifier.SuccessNet`).
- `CameraEncoder`: uint8 (B, H, W, C) -> /255 inside the module -> `num_layers` 3x3 convs (`channels` each, the
  first with stride 2, as DrQ) -> flatten -> Linear -> LayerNorm -> tanh, `feature_dim` values. The flattened map
  (no global pool) keeps where things are in the image, which a pooled feature would throw away.
- `PixelEncoder`: one `CameraEncoder` per image group (cameras differ in what they see, so they share no weights),
  features concatenated in `image_groups` order.
- `random_shift`: DrQ's augmentation (pad by replicating the edge, crop back at a random offset), applied to replay
  batches during training only; acting, evaluation and the exported graph see the frame as it is.

No pretrained weights can be downloaded here, so the encoder trains from scratch, through the critic loss
(see `s2r.policies.offpolicy`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from s2r.policies.replay import Batch
from torch import nn


@dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    """The off-policy learners' image encoder; off (state only, the fast default) while `image_groups` is empty.

    Attributes:
        image_groups: uint8 (H, W, C) observation groups to encode, one encoder each; actor and critics read them.
        feature_dim: Features per camera after the LayerNorm + tanh projection (DrQ: 50).
        channels: Channels of every conv layer.
        num_layers: 3x3 conv layers; the first has stride 2, the rest stride 1.
        pad: Random-shift augmentation in pixels on replay batches (0: none).
    """

    image_groups: tuple[str, ...] = ()
    feature_dim: int = 50
    channels: int = 32
    num_layers: int = 4
    pad: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.image_groups, str):
            raise ValueError(f"EncoderConfig.image_groups must be a tuple of group names, got the string "
                             f"{self.image_groups!r}; write ({self.image_groups!r},)")
        if len(set(self.image_groups)) != len(self.image_groups):
            raise ValueError(f"EncoderConfig.image_groups names a group twice: {list(self.image_groups)}")
        if self.feature_dim < 1 or self.channels < 1 or self.num_layers < 1:
            raise ValueError("EncoderConfig.feature_dim, channels and num_layers must be >= 1, got "
                             f"{self.feature_dim}, {self.channels}, {self.num_layers}")
        if self.pad < 0:
            raise ValueError(f"EncoderConfig.pad must be >= 0 pixels, got {self.pad}")

    @property
    def enabled(self) -> bool:
        """True when at least one image group is encoded."""
        return bool(self.image_groups)


def conv_stack(in_channels: int, channels: tuple[int, ...], strides: tuple[int, ...], padding: int = 0) -> nn.Sequential:
    """3x3 conv + ReLU per entry of `channels` (with its stride), then Flatten: (B, C, H, W) -> (B, flat)."""
    layers: list[nn.Module] = []
    c = in_channels
    for out, stride in zip(channels, strides, strict=True):
        layers += [nn.Conv2d(c, out, 3, stride, padding), nn.ReLU()]
        c = out
    layers.append(nn.Flatten())
    return nn.Sequential(*layers)


class CameraEncoder(nn.Module):
    """uint8 (B, H, W, C) images -> (B, feature_dim) features in [-1, 1]; the /255 is inside (and so in ONNX)."""

    def __init__(self, shape: tuple[int, int, int], cfg: EncoderConfig) -> None:
        super().__init__()
        h, w, c = shape
        self.shape = (h, w, c)
        self.conv = conv_stack(c, (cfg.channels,) * cfg.num_layers, (2,) + (1,) * (cfg.num_layers - 1))
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, c, h, w)).shape[1]
        # LayerNorm + tanh on the projection (DrQ/SAC-AE): bounded features whose scale the critic loss cannot inflate.
        self.head = nn.Sequential(nn.Linear(flat, cfg.feature_dim), nn.LayerNorm(cfg.feature_dim), nn.Tanh())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(images.permute(0, 3, 1, 2).float() / 255.0))


class PixelEncoder(nn.Module):
    """One `CameraEncoder` per image group; `forward(obs)` concatenates their features (B, out_dim).

    Args:
        shapes: image group -> (H, W, C), in the order features are concatenated.
        cfg: Encoder settings.
    """

    def __init__(self, shapes: Mapping[str, tuple[int, int, int]], cfg: EncoderConfig) -> None:
        super().__init__()
        self.groups = tuple(shapes)
        self.cameras = nn.ModuleDict({g: CameraEncoder(tuple(shapes[g]), cfg) for g in self.groups})
        self.out_dim = cfg.feature_dim * len(self.groups)

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([self.cameras[g](obs[g]) for g in self.groups], dim=-1)


def random_shift(images: torch.Tensor, pad: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """(B, H, W, C) images, each shifted by up to `pad` pixels in x and y with the edge repeated (DrQ).

    Same as padding by `pad` with replicated edges and cropping (H, W) back at a random offset, written as one
    gather with clamped indices: no float copy, any dtype, any device.

    Args:
        images: (B, H, W, C) batch (uint8 frames from replay).
        pad: Largest shift in pixels (0 returns `images` unchanged).
        gen: CPU generator for the offsets (None: torch's global one).
    """
    if pad == 0:
        return images
    b, h, w, _ = images.shape
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(images.device)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(images.device)
    rows = (dy[:, None] - pad + torch.arange(h, device=images.device)).clamp(0, h - 1)  # (B, H)
    cols = (dx[:, None] - pad + torch.arange(w, device=images.device)).clamp(0, w - 1)  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    return images[batch, rows[:, :, None], cols[:, None, :]]


def image_shapes(obs_dims: Mapping[str, int | tuple[int, ...]], obs_dtypes: Mapping[str, str],
                  groups: tuple[str, ...]) -> dict[str, tuple[int, int, int]]:
    """(H, W, C) of each encoder group (`obs_dims` as `env.obs_shapes`); a missing or non-uint8-image group is refused."""
    shapes = {}
    for g in groups:
        if g not in obs_dims:
            raise ValueError(f"encoder.image_groups names '{g}', which the env does not provide (it has {sorted(obs_dims)})")
        spec = obs_dims[g]
        shape = (int(spec),) if isinstance(spec, int | np.integer) else tuple(int(v) for v in spec)
        dtype = str(obs_dtypes.get(g, "float32"))
        if len(shape) != 3 or dtype != "uint8":
            raise ValueError(f"encoder.image_groups names '{g}', which is {shape} {dtype}, not a uint8 (H, W, C) image; "
                             "list vector groups in actor_obs/critic_obs instead")
        shapes[g] = (shape[0], shape[1], shape[2])
    return shapes


def augment(batch: Batch, groups: tuple[str, ...], pad: int) -> Batch:
    """The batch with every image group of obs and next obs randomly shifted by up to `pad` pixels (independently)."""
    obs, nxt = dict(batch.obs), dict(batch.next_obs)
    for g in groups:
        obs[g], nxt[g] = random_shift(obs[g], pad), random_shift(nxt[g], pad)
    return dataclasses.replace(batch, obs=obs, next_obs=nxt)


__all__ = ["CameraEncoder", "EncoderConfig", "PixelEncoder", "augment", "conv_stack", "image_shapes", "random_shift"]
