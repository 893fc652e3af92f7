"""The off-policy learner's configuration and action hooks (`s2r.policies.offpolicy` re-exports them).

Kept apart from the learner so methods built on it (residual RL, HIL-SERL, SAC/TD3) can read and document their
defaults without the learner's machinery; every field's meaning is in its comment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from s2r.policies.encoders import EncoderConfig

Compose = Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/inf; `loss_name` is "critic", "actor" or "alpha". Nothing was stepped with it."""

    def __init__(self, loss_name: str, update: int) -> None:
        super().__init__(f"the {loss_name} loss is not finite at update {update}; restore the last good checkpoint "
                         "(lower the learning rate or check the rewards/observations for NaN)")
        self.loss_name = loss_name
        self.update = update


@dataclass(frozen=True, kw_only=True)
class OffPolicyConfig:
    """Off-policy hyper-parameters (defaults: RLPD/REDQ-style SAC with 10 critics)."""

    actor: str = "stochastic"  # "stochastic" (SAC) or "deterministic" (TD3)
    actor_obs: tuple[str, ...] = ("policy",)
    critic_obs: tuple[str, ...] = ("policy",)
    actor_hidden: tuple[int, ...] = (256, 256)
    critic_hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    layer_norm: bool = True
    num_critics: int = 10
    critic_subset: int = 2  # target = min over this many randomly chosen target critics
    gamma: float = 0.99
    n_step: int = 1
    tau: float = 0.005
    batch_size: int = 256
    utd_ratio: float = 1.0  # gradient updates per collected transition (the runner owes N * utd for N transitions)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    policy_delay: int = 1  # actor (and temperature) step every this many updates; TD3 uses 2
    critic_warmup_updates: int = 0
    zero_init_actor: bool = False
    max_grad_norm: float | None = None
    # deterministic actor
    exploration_noise: float = 0.1
    target_noise: float = 0.2
    target_noise_clip: float = 0.5
    # stochastic actor
    init_alpha: float = 1.0
    alpha_lr: float = 3e-4
    target_entropy: float | None = None  # None: -action_dim
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    # Actor objective extras. Adam turns even a tiny, noisy critic gradient into a full-size step, so an
    # actor that should stay near a good starting point (a zero residual) drifts off it before the critics
    # know anything. `actor_penalty` charges the squared actor output (for a residual: its size);
    # `actor_pessimism` maximises mean - k * std over the critic ensemble, so actions the critics disagree
    # about (ones the data never showed them) look worse, not better.
    actor_penalty: float = 0.0
    actor_pessimism: float = 0.0
    # What the actor climbs: "mean" of the ensemble (REDQ/RLPD and the residual RL paper; every critic's
    # opinion counts) or "min" over all members (TD3-style pessimism, kept for the ablation).
    actor_q: str = "mean"
    # Pessimistic Q-filter (issue 13). The anchor is the actor output 0 (for a residual learner: the base action).
    # `q_filter=k` keeps the actor's action at acting time only where the ensemble is confident it beats the
    # anchor: per head d_i = Q_i(s, compose(a)) - Q_i(s, compose(0)), kept iff mean(d) - k * std(d) > 0; else
    # the output is 0 (exploration noise is added after the filter, so collection still explores around the
    # base). Paired per head, not "mean - k*std of Q(s, a) > mean Q(s, b)": at one state the heads disagree
    # mostly about the state's value, and that disagreement is shared by two actions 1% of the range apart;
    # an unpaired bound would subtract it and reject every residual whatever the critic learned about the
    # residual itself. None: off. `q_filter_bc` (Q-filtered BC, Nair et al. 2018) adds to the actor loss
    # this weight times the squared output where the filter rejects the actor's action: the actor is pulled
    # back to the base where the critics show no confident gain, instead of drifting on their noise. It filters
    # with the same k, so it is inert while q_filter is None (`q_filter=none` alone turns both off).
    q_filter: float | None = None
    q_filter_bc: float = 0.0
    demo_fraction: float = 0.5  # share of each batch drawn from the demo buffer, when one is given (RLPD: half)
    compile: bool = False  # torch.compile the loss functions (falls back to eager if compiling fails)
    keep_freed_memory: bool = True  # on the CPU, call `keep_freed_memory()` (process-wide; see there)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # image groups to learn from; none by default

    def __post_init__(self) -> None:
        if self.actor not in ("stochastic", "deterministic"):
            raise ValueError(f"OffPolicyConfig.actor must be 'stochastic' or 'deterministic', got '{self.actor}'")
        if not 1 <= self.critic_subset <= self.num_critics:
            raise ValueError(f"OffPolicyConfig.critic_subset must be in [1, num_critics={self.num_critics}], "
                             f"got {self.critic_subset}")
        if self.actor_q not in ("mean", "min"):
            raise ValueError(f"OffPolicyConfig.actor_q must be 'mean' or 'min', got '{self.actor_q}'")
        if not 0.0 <= self.demo_fraction <= 1.0:
            raise ValueError(f"OffPolicyConfig.demo_fraction must be in [0, 1], got {self.demo_fraction}")
        if self.q_filter is not None and not self.q_filter >= 0.0:
            raise ValueError(f"OffPolicyConfig.q_filter must be None (off) or >= 0 (the k of mean - k*std), "
                             f"got {self.q_filter}")
        if not self.q_filter_bc >= 0.0:
            raise ValueError(f"OffPolicyConfig.q_filter_bc must be >= 0 (0: off), got {self.q_filter_bc}")
        if self.policy_delay < 1 or self.n_step < 1 or not self.utd_ratio > 0:
            raise ValueError("OffPolicyConfig.policy_delay and n_step must be >= 1 and utd_ratio > 0")


def identity_compose(actor_out: torch.Tensor, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The default `compose`: the actor's output is the env action."""
    return actor_out


def residual_scale(scale: float | tuple[float, ...]) -> float | torch.Tensor:
    """A residual bound as the graphs multiply by it: one float, or a tensor of one bound per action dimension."""
    return float(scale) if isinstance(scale, int | float) else torch.tensor([float(v) for v in scale])


def residual_compose(scale: float | tuple[float, ...], group: str = "base_action",
                     gain: torch.Tensor | None = None) -> Compose:
    """`clip(base + gain * scale * actor_out, -1, 1)` with the base policy's action read from observation `group`;
    `scale` is one number or one per action dimension. `gain` (0-dim, read at every call, so its owner can ramp it
    in place without recompiling) multiplies the scale; None: 1."""
    s = residual_scale(scale)

    def compose(actor_out: torch.Tensor, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        k = s if isinstance(s, float) else s.to(actor_out.device)
        if gain is not None:
            k = k * gain.to(actor_out.device)
        return torch.clamp(obs[group] + k * actor_out, -1.0, 1.0)

    return compose
