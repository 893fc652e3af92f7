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
from s2r.policies.offpolicy import ExportedActor, filter_keep, residual_compose
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


class FilteredResidual(nn.Module):
    """The residual actor with the learner's pessimistic Q-filter inside: (obs, base_action) -> correction.

    What the learner does at acting time (`OffPolicyLearner.act(..., filtered=True)`), as a graph: the critic
    ensemble scores base + scale * r against the base alone, per head, and r is replaced by 0 where
    mean - k * std of the paired differences is not above 0. Only possible when the critics read nothing the
    robot lacks (`critic_obs` within the actor's groups: no `privileged`); `exportable_filter` says whether.
    A copy: later updates do not change it.
    """

    def __init__(self, learner: object, scale: float | tuple[float, ...]) -> None:
        super().__init__()
        cfg = learner.cfg
        if not exportable_filter(cfg):
            raise ValueError(f"the Q-filter reads {list(cfg.critic_obs)}, not only the actor's groups "
                             f"{list(cfg.actor_obs)}: it cannot go into the exported graph")
        self.actor = ExportedActor(learner)
        self.critic = copy.deepcopy(learner.critic).cpu().eval().requires_grad_(False)
        self.compose, self.k = residual_compose(scale, BASE_GROUP), float(cfg.q_filter)
        # Where each critic group sits among the actor's inputs (the graph's inputs are the actor's groups).
        self.critic_index = [list(cfg.actor_obs).index(g) for g in cfg.critic_obs]
        dims = [learner.vector_dims[g] for g in cfg.actor_obs]
        width = sum(dims[i] for i in self.critic_index)
        norm = learner.critic_norm
        self.register_buffer("mean", norm[0].detach().cpu().clone() if norm is not None else torch.zeros(width))
        self.register_buffer("inv_std", norm[1].detach().cpu().clone() if norm is not None else torch.ones(width))
        self.base_index = list(cfg.actor_obs).index(BASE_GROUP)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        r = self.actor(*inputs)
        obs = {BASE_GROUP: inputs[self.base_index]}
        x = (torch.cat([inputs[i] for i in self.critic_index], dim=-1) - self.mean) * self.inv_std
        with_r, anchor = self.compose(r, obs), self.compose(torch.zeros_like(r), obs)
        q = self.critic(torch.cat([torch.cat([x, with_r], dim=-1), torch.cat([x, anchor], dim=-1)])).squeeze(-1)
        n = r.shape[0]
        keep = filter_keep(q[:, :n] - q[:, n:], self.k).unsqueeze(-1)  # paired per head, as the learner's act
        return torch.where(keep, r, torch.zeros_like(r))


def exportable_filter(cfg: object) -> bool:
    """The learner config has a Q-filter whose critics read only groups the exported graph gets."""
    return (getattr(cfg, "q_filter", None) is not None and BASE_GROUP in cfg.actor_obs
            and set(cfg.critic_obs) <= set(cfg.actor_obs))
