"""History-based students of a privileged teacher: their networks and losses (the trainer is `distill.py`).

Every student reads only the `policy` group with its history (frames oldest first, newest last, as the
env's `ObsHistory` and the robot's `ObservationBuilder` both stack them), normalised with the teacher's
per-frame statistics tiled over the history. Those statistics are frozen buffers, so the exported ONNX
graph carries them and training never moves them.

- `RMAStudent`: history encoder -> an estimate of the teacher's latent; the teacher's actor head, frozen,
  acts on the newest frame ⊕ that estimate (RMA's adaptation module). Loss: `latent_regression`.
- `DAggerStudent`: an MLP from the history straight to actions, trained on the teacher's action labels.
- `HIBModel`: history encoder -> a Gaussian latent q(z|h) = N(mu(h), diag sigma^2) (sigma learned, the same
  for every state); the actor head (from the teacher's) and the critic (the teacher's, reading the
  teacher's inputs) train with PPO together with `hib_loss` = regression of mu to the teacher latent +
  beta * KL(q || N(0, I)). The PPO update feeds the actor mu + sigma * noise, so the return decides how
  much of the latent survives the noise (the bottleneck); acting and the export use mu. With beta = 0 the
  representation loss is exactly `latent_regression` (same value, same gradient). `param_groups` lets the
  actor head (and action std) step at a fraction of the encoder's rate: at full rate (the first benchmark) PPO
  pulled the head off the teacher's and the student lost out of distribution; at 0 (the default) the RL term
  shapes only the representation, which is what the bottleneck is about.
"""

from __future__ import annotations

import copy
import math

import torch
from s2r.policies.networks import EmpiricalNormalizer, mlp
from s2r.policies.teacher import LoadedTeacher, TeacherModel
from torch import nn


class HistoryNorm(nn.Module):
    """Normalise a stacked history with the teacher's statistics of one policy frame, tiled `history` times."""

    def __init__(self, teacher: TeacherModel, frame: int, history: int) -> None:
        super().__init__()
        norm, p = teacher.actor_norm, teacher.policy_dim
        if isinstance(norm, EmpiricalNormalizer):
            mean, std, clip = norm.mean[p - frame:p], torch.sqrt(norm.var[p - frame:p] + norm.eps), norm.clip
        else:  # a teacher trained without normalisation: the student sees raw values too
            mean, std, clip = torch.zeros(frame), torch.ones(frame), math.inf
        self.clip = float(clip)
        self.register_buffer("mean", mean.detach().clone().repeat(history))
        self.register_buffer("std", std.detach().clone().repeat(history))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, history * frame) -> the same, normalised and clipped."""
        return torch.clamp((x - self.mean) / self.std, -self.clip, self.clip)


def _frozen_copy(teacher: TeacherModel) -> TeacherModel:
    t = copy.deepcopy(teacher).eval()
    for p in t.parameters():
        p.requires_grad_(False)
    return t


def latent_regression(z_hat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """RMA's loss: mean squared error between the estimated and the teacher's latent."""
    return ((z_hat - target) ** 2).mean()


def hib_loss(mu: torch.Tensor, log_sigma: torch.Tensor, target: torch.Tensor,
             beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """HIB's representation loss: `latent_regression(mu, target)` + beta * KL(N(mu, sigma^2) || N(0, I)).

    Args:
        mu: (batch, latent) means of q(z | history).
        log_sigma: (latent,) or (batch, latent) log standard deviations of q.
        target: (batch, latent) the teacher's latent.
        beta: Weight of the bottleneck; 0 leaves RMA's regression.

    Returns:
        (loss, {"latent_mse", "latent_kl"}).
    """
    reg = latent_regression(mu, target)
    log_sigma = log_sigma.expand_as(mu)
    kl = 0.5 * (mu**2 + torch.exp(2 * log_sigma) - 1.0 - 2 * log_sigma).sum(-1).mean()
    loss = reg + beta * kl if beta else reg  # beta = 0: not even a zero-weighted term in the graph
    return loss, {"latent_mse": reg.item(), "latent_kl": kl.item()}


class RMAStudent(nn.Module):
    """History encoder -> latent estimate; the teacher's frozen actor head acts on the newest frame ⊕ it."""

    def __init__(self, teacher: TeacherModel, frame: int, history: int, hidden: tuple[int, ...],
                 activation: str = "elu") -> None:
        super().__init__()
        self.teacher = _frozen_copy(teacher)
        self.norm = HistoryNorm(teacher, frame, history)
        self.encoder = mlp(frame * history, hidden, teacher.enc_cfg.latent_dim, activation)
        self.actor_dim = frame * history

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, latent) estimate of the teacher's latent from raw history x."""
        return self.encoder(self.norm(x))

    def act_mean(self, x: torch.Tensor) -> torch.Tensor:
        t = self.teacher
        return t.head(t.normalize_policy(x[:, -t.policy_dim:]), self.latent(x))

    def trainable(self) -> list[nn.Parameter]:
        """What the optimiser moves: the encoder (the head stays the teacher's)."""
        return list(self.encoder.parameters())


class DAggerStudent(nn.Module):
    """An MLP from the normalised history straight to actions."""

    def __init__(self, teacher: TeacherModel, frame: int, history: int, hidden: tuple[int, ...],
                 activation: str = "elu") -> None:
        super().__init__()
        self.norm = HistoryNorm(teacher, frame, history)
        self.net = mlp(frame * history, hidden, teacher.action_dim, activation)
        self.actor_dim = frame * history

    def act_mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))

    def trainable(self) -> list[nn.Parameter]:
        """Every weight of the MLP."""
        return list(self.net.parameters())


class HIBModel(nn.Module):
    """The HIB student as PPO sees it (the `ActorCritic` interface): actor on the history, critic the teacher's.

    Actor input: the `policy` group with its history. Critic input: the teacher's critic input (the newest
    frames of its groups) followed by the privileged group, which only the HIB loss reads (the target
    latent); neither reaches the exported graph. Set `latent_noise` during the PPO update only.
    """

    def __init__(self, teacher: LoadedTeacher, frame: int, history: int, hidden: tuple[int, ...],
                 activation: str = "elu", init_latent_std: float = 0.1) -> None:
        super().__init__()
        t = teacher.model
        self.base = copy.deepcopy(t)  # actor head, critic, log_std and normalisers start as the teacher's
        self.base.train().requires_grad_(True)  # a loaded teacher is frozen; this copy learns with PPO
        self.base.encoder.requires_grad_(False)  # unused: the history encoder replaces it
        self.norm = HistoryNorm(t, frame, history)
        latent = t.enc_cfg.latent_dim
        self.encoder = mlp(frame * history, hidden, latent, activation)
        self.log_sigma = nn.Parameter(torch.full((latent,), math.log(init_latent_std)))
        self.critic_groups = tuple((g, teacher.groups[g]["width"]) for g in t.cfg.critic_obs)
        self.priv = (t.enc_cfg.group, teacher.groups[t.enc_cfg.group]["width"])
        self.critic_teacher_dim = sum(w for _, w in self.critic_groups)
        self.actor_dim = frame * history
        self.critic_dim = self.critic_teacher_dim + self.priv[1]
        self.action_dim = t.action_dim
        self.latent_noise = False

    @property
    def log_std(self) -> nn.Parameter:
        """The action distribution's log standard deviation (PPO reports it)."""
        return self.base.log_std

    def param_groups(self, actor_lr_scale: float) -> list[dict]:
        """PPO's Adam groups: the actor head and log_std at `actor_lr_scale` times the rate, the rest at 1.

        A scale of 0 also stops their gradients (nothing to compute for weights that never move).
        """
        head = [*self.base.actor.parameters(), self.base.log_std]
        if actor_lr_scale == 0:
            for p in head:
                p.requires_grad_(False)
        ids = {id(p) for p in head}
        rest = [p for p in self.parameters() if id(p) not in ids and p.requires_grad]
        return [{"params": rest, "lr_scale": 1.0}, {"params": head, "lr_scale": float(actor_lr_scale)}]

    def actor_input(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return obs["policy"]

    def critic_input(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [obs[g][:, -w:] for g, w in self.critic_groups]
        g, w = self.priv
        return torch.cat([*parts, obs[g][:, -w:]], dim=-1)

    def privileged(self, critic_x: torch.Tensor) -> torch.Tensor:
        """The raw privileged group at the end of a critic input (the HIB loss's target source)."""
        return critic_x[:, self.critic_teacher_dim:]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu (batch, latent), log_sigma (latent,)) of q(z | history)."""
        return self.encoder(self.norm(x)), self.log_sigma

    def act_mean(self, x: torch.Tensor) -> torch.Tensor:
        mu, log_sigma = self.encode(x)
        z = mu + torch.exp(log_sigma) * torch.randn_like(mu) if self.latent_noise else mu
        b = self.base
        return b.head(b.normalize_policy(x[:, -b.policy_dim:]), z)

    def distribution(self, actor_x: torch.Tensor) -> torch.distributions.Normal:
        mean = self.act_mean(actor_x)
        return torch.distributions.Normal(mean, self.base.log_std.exp().expand_as(mean))

    def value(self, critic_x: torch.Tensor) -> torch.Tensor:
        return self.base.value(critic_x[:, : self.critic_teacher_dim])

    def update_normalizers(self, actor_x: torch.Tensor, critic_x: torch.Tensor) -> None:
        """Nothing moves: the statistics are the teacher's, the same ones the exported graph carries."""
