"""The planning policy network: waypoints -> per-segment log-ratios of the heuristic durations."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from s2r.policies.mfrl.estimator import MFRLError
from torch import nn


@dataclass(frozen=True, kw_only=True)
class PlannerNetConfig:
    """The planning policy network.

    Attributes:
        hidden: Hidden layer widths of the MLP.
        pos_scale: m; positions are divided by it before the MLP.
    """

    hidden: tuple[int, ...] = (256, 256)
    pos_scale: float = 3.0



class PlannerNet(nn.Module):
    """Waypoints (the task's `policy` observation) -> per-segment log-ratios in [-1, 1].

    The graph turns the padded waypoints into what the timing depends on before the MLP: everything is
    rotated about z so the first segment points along +x (the vehicle, gravity and drag are symmetric
    about z, so heading carries no information), plus segment vectors, lengths and the cosines of the
    turns. Padded segments output 0. All of it exports to plain ONNX ops.
    """

    def __init__(self, max_waypoints: int, cfg: PlannerNetConfig) -> None:
        super().__init__()
        self.k = max_waypoints
        self.obs_dim = 4 * max_waypoints
        self.pos_scale = cfg.pos_scale
        k = max_waypoints
        width = 3 * k + 3 * (k - 1) + (k - 1) + (k - 2) + k
        layers: list[nn.Module] = []
        for h in cfg.hidden:
            layers += [nn.Linear(width, h), nn.ELU()]
            width = h
        out = nn.Linear(width, k - 1)
        # Start at the heuristic (all ratios 1): a known-safe plan the estimator then learns to shorten.
        nn.init.normal_(out.weight, std=1e-3)
        nn.init.zeros_(out.bias)
        self.mlp = nn.Sequential(*layers, out)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, 4 * max_waypoints) observations -> (B, max_waypoints - 1) actions."""
        if obs.shape[-1] != self.obs_dim:
            raise MFRLError(f"planner observations have {obs.shape[-1]} values per row; this planner reads "
                            f"{self.obs_dim} (3 x {self.k} relative waypoints, then a {self.k}-value mask)")
        k = self.k
        wp = obs[:, : 3 * k].reshape(-1, k, 3)
        mask = obs[:, 3 * k : 4 * k]
        seg_mask = mask[:, 1:]
        first = wp[:, 1, :2]
        r = torch.sqrt((first**2).sum(-1, keepdim=True) + 1e-6)
        c, s = first[:, :1] / r, first[:, 1:2] / r  # heading of the first segment
        x, y, z = wp[..., 0], wp[..., 1], wp[..., 2]
        wp = torch.stack([c * x + s * y, c * y - s * x, z], -1)
        seg = (wp[:, 1:] - wp[:, :-1]) * seg_mask[..., None]
        length = torch.sqrt((seg**2).sum(-1) + 1e-9) * seg_mask
        unit = seg / (length[..., None] + 1e-6)
        turn = (unit[:, :-1] * unit[:, 1:]).sum(-1)  # cos of each interior turn (0 where padded)
        h = torch.cat([wp.reshape(-1, 3 * k) / self.pos_scale, seg.reshape(-1, 3 * (k - 1)) / self.pos_scale,
                       length / self.pos_scale, turn, mask], 1)
        return torch.tanh(self.mlp(h)) * seg_mask
