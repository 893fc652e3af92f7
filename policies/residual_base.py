"""The frozen base of residual RL, run step by step (`s2r.policies.residual` re-exports these names).

The base is a chunked BC network; `BasePolicy` runs its chunks through temporal ensembling for every env, and
`demos_with_base` relabels the demos with the base's own actions (the residual learner's `base_action` group).
`FirstActionActor` / `first_action_bc` turn the same network into a plain actor for the full fine-tuning baseline.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import torch
from s2r.policies.bc import ChunkedBC, temporal_ensemble
from s2r.real.chunking import ChunkHistory, ensemble_weights
from s2r.real.episodes import Episode
from torch import nn

BASE_GROUP = "base_action"


class FirstActionActor(nn.Module):
    """The BC network as a learner actor: pre-tanh first action of its chunk (full fine-tuning baseline)."""

    def __init__(self, bc: ChunkedBC) -> None:
        super().__init__()
        self.bc = bc

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        n = self.bc.normalizer
        x = torch.clamp((obs - n.mean) / torch.sqrt(n.var + n.eps), -n.clip, n.clip)
        return self.bc.net(x)[:, : self.bc.action_dim]


def first_action_bc(bc: ChunkedBC) -> ChunkedBC:
    """A chunk-1 copy of a BC network that outputs only its first action (how the fine-tuned net is run)."""
    one = copy.deepcopy(bc)
    one.chunk = 1
    last = [m for m in one.net.modules() if isinstance(m, nn.Linear)][-1]
    keep = bc.action_dim
    new = nn.Linear(last.in_features, keep)
    with torch.no_grad():
        new.weight.copy_(last.weight[:keep])
        new.bias.copy_(last.bias[:keep])
    one.net[-1] = new
    return one


class BasePolicy:
    """The frozen base run step by step for `num_envs` envs: chunk -> temporal ensemble -> action."""

    def __init__(self, bc: ChunkedBC, ensemble_m: float, num_envs: int) -> None:
        self.bc = bc.eval().requires_grad_(False)
        self.weights = torch.from_numpy(ensemble_weights(bc.chunk, ensemble_m))
        self.history = ChunkHistory(num_envs, bc.chunk, bc.action_dim)

    @torch.no_grad()
    def propose(self, obs: np.ndarray, env_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(action, chunk) for `obs` given the history so far (of `env_ids`, default all), without advancing it."""
        chunk = self.bc(torch.as_tensor(obs, dtype=torch.float32))
        ids = slice(None) if env_ids is None else env_ids
        past, mask = (torch.from_numpy(v[ids]) for v in self.history.feed().values())
        return temporal_ensemble(chunk, past, mask, self.weights).numpy(), chunk.numpy()

    def step(self, obs: np.ndarray) -> np.ndarray:
        """The base action for this step; advances the chunk history."""
        action, chunk = self.propose(obs)
        self.history.push(chunk)
        return action

    def reset(self, env_ids: np.ndarray | None = None) -> None:
        self.history.reset(env_ids)


def demos_with_base(episodes: list[Episode], bc: ChunkedBC, ensemble_m: float, *, relabel: bool = True,
                    reset_history: bool = True) -> list[Episode]:
    """The demos with observation group `base_action` added: the base's own action at every step.

    Args:
        episodes: The demos.
        bc: The base.
        ensemble_m: Its temporal-ensembling weight.
        relabel: False: the demo's recorded action instead (the bootstrap step repeats the last one).
        reset_history: Start each episode with an empty chunk history (False carries it over, the bug of
            amazon-far/residual-offpolicy-rl#5, kept for the ablation).
    """
    out = []
    base = BasePolicy(bc, ensemble_m, 1)
    for ep in episodes:
        if relabel:
            if reset_history:
                base.reset()
            acts = np.stack([base.step(ep.obs["policy"][t : t + 1])[0] for t in range(ep.length + 1)])  # (T+1, A)
        else:
            acts = np.concatenate([ep.actions, ep.actions[-1:]])
        out.append(replace(ep, obs={**ep.obs, BASE_GROUP: acts.astype(np.float32)}))
    return out
