"""The privileged teacher ("ppo-teacher"): PPO whose actor also reads what only the simulator knows.

The teacher's actor is MLP(policy observation ⊕ latent), latent = encoder MLP(privileged observation), a
few numbers (8 by default) that summarise friction, masses, motor strength, contacts and base velocity; its
critic reads the policy and privileged groups. It trains through `s2r.policies.ppo.PPO` with this model
handed in, so the PPO update is the one every PPO run uses.

The teacher is sim-only: a robot cannot feed its privileged inputs, so its export writes no ONNX file.
Instead it writes `teacher.pt` in the run folder (weights, configs and the observation groups and sizes it
read), which `s2r.policies.distill` loads to train history-based students that do export to ONNX. On load
the student's task is checked against those groups (`check_teacher_groups`): a mismatch is one sentence
naming the group and both sizes, not a loss that never falls.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from s2r.policies.algorithm import AlgorithmTaskMismatch, RunContext, register_algorithm
from s2r.policies.networks import ActorCritic, ActorCriticConfig, EmpiricalNormalizer, mlp
from s2r.policies.ppo import PPO, PPOConfig, PPOTrainer, TrainConfig
from torch import nn

TEACHER_FILE = "teacher.pt"
TEACHER_FORMAT = 1


class TeacherError(ValueError):
    """A teacher that cannot be loaded, or that does not fit the student's task."""


@dataclass(frozen=True, kw_only=True)
class PrivilegedEncoderConfig:
    """The teacher's privileged encoder.

    Attributes:
        group: Observation group it reads (sim-only knowledge).
        hidden: Hidden layer widths.
        latent_dim: Width of the latent the actor reads (and the RMA / HIB students regress).
    """

    group: str = "privileged"
    hidden: tuple[int, ...] = (64, 32)
    latent_dim: int = 8

    def __post_init__(self) -> None:
        if self.latent_dim < 1:
            raise ValueError(f"encoder.latent_dim must be >= 1, got {self.latent_dim}")


@dataclass(frozen=True, kw_only=True)
class TeacherTrainConfig(TrainConfig):
    """A PPO run whose actor reads the privileged group through `encoder` (the actor groups stay `policy`)."""

    encoder: PrivilegedEncoderConfig = field(default_factory=PrivilegedEncoderConfig)
    # A `ppo` run folder (or its policy.onnx) on the same task whose normaliser and actor MLP start the teacher's
    # policy path; the latent's inputs to the first layer start near zero, so the teacher starts as that policy
    # and PPO teaches it to read the latent. Empty: train from scratch.
    init_from: str = ""


class TeacherModel(ActorCritic):
    """Actor = MLP(normalised policy ⊕ encoder(normalised privileged)); critic as `ActorCritic`.

    The actor input is the raw concatenation [actor groups..., privileged] (`actor_input`), normalised by
    one running normaliser, then split: the first `policy_dim` values go straight to the actor MLP, the rest
    through the encoder.
    """

    def __init__(self, obs_dims: dict[str, int], action_dim: int, cfg: ActorCriticConfig,
                 enc: PrivilegedEncoderConfig) -> None:
        if enc.group in cfg.actor_obs:
            raise ValueError(f"the teacher's actor groups {cfg.actor_obs} already hold '{enc.group}', which it reads "
                             "through its encoder; leave it out of policy.actor_obs")
        super().__init__(obs_dims, action_dim, replace(cfg, actor_obs=(*cfg.actor_obs, enc.group)))
        self.base_cfg, self.enc_cfg = cfg, enc
        self.policy_dim = sum(obs_dims[g] for g in cfg.actor_obs)
        self.priv_dim = obs_dims[enc.group]
        self.encoder = mlp(self.priv_dim, enc.hidden, enc.latent_dim, cfg.activation)
        self.actor = mlp(self.policy_dim + enc.latent_dim, cfg.actor_hidden, action_dim, cfg.activation)
        nn.init.orthogonal_(self.actor[-1].weight, gain=0.01)
        nn.init.zeros_(self.actor[-1].bias)

    def _normed(self, actor_x: torch.Tensor) -> torch.Tensor:
        return self._norm(self.actor_norm, actor_x)

    def latent(self, actor_x: torch.Tensor) -> torch.Tensor:
        """(batch, latent_dim) privileged latent from raw actor input."""
        return self.encoder(self._normed(actor_x)[:, self.policy_dim:])

    def _norm_part(self, x: torch.Tensor, part: slice) -> torch.Tensor:
        norm = self.actor_norm
        if not isinstance(norm, EmpiricalNormalizer):
            return x
        return torch.clamp((x - norm.mean[part]) / torch.sqrt(norm.var[part] + norm.eps), -norm.clip, norm.clip)

    def normalize_policy(self, policy_x: torch.Tensor) -> torch.Tensor:
        """The policy part of the actor input, normalised as the teacher does (raw (batch, policy_dim))."""
        return self._norm_part(policy_x, slice(0, self.policy_dim))

    def latent_from_privileged(self, priv_x: torch.Tensor) -> torch.Tensor:
        """(batch, latent_dim) latent from the raw privileged part of the actor input alone."""
        return self.encoder(self._norm_part(priv_x, slice(self.policy_dim, None)))

    def head(self, policy_normed: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The actor MLP on a normalised policy part and a latent: the mean action."""
        return self.actor(torch.cat([policy_normed, z], dim=-1))

    def act_mean(self, actor_x: torch.Tensor) -> torch.Tensor:
        xn = self._normed(actor_x)
        return self.head(xn[:, : self.policy_dim], self.encoder(xn[:, self.policy_dim:]))


@register_algorithm
class TeacherTrainer(PPOTrainer):
    """PPO with the privileged encoder in the actor; exports `teacher.pt` (no ONNX: it reads sim-only inputs)."""

    algo_id = "ppo-teacher"
    config_cls = TeacherTrainConfig
    description = ("privileged teacher: PPO whose actor reads an encoding of the privileged group; exports "
                   "teacher.pt for `--algo distill` students (no ONNX)")
    # PPO's update averages gradients, KL and normaliser batches over the ranks, the encoder's included; each rank
    # runs its own envs (and terrain curriculum), and rank 0 writes teacher.pt.
    data_parallel = True

    def __init__(self, ctx: RunContext) -> None:
        self._enc_cfg = ctx.cfg.encoder  # read by _make_ppo, which PPOTrainer.__init__ calls
        super().__init__(ctx)

    def _make_ppo(self, algo_cfg: PPOConfig) -> PPO:
        spec = self.env.spec
        g = self._enc_cfg.group
        if g not in self.env.obs_dims:
            raise AlgorithmTaskMismatch(f"ppo-teacher reads observation group '{g}' through its encoder but task "
                                        f"'{self.ctx.task_id}' has only {', '.join(sorted(spec.groups))}; pick a task "
                                        "with a privileged group or set encoder.group")
        model = TeacherModel(self.env.obs_dims, spec.action_dim, algo_cfg.policy, self._enc_cfg)
        if self.cfg.init_from and not self.ctx.resume:
            warm_start_from_onnx(model, Path(self.cfg.init_from))
        return PPO(self.env.obs_dims, spec.action_dim, self.cfg.num_envs, algo_cfg, dist=self.ctx.dist, model=model)

    def export(self) -> dict[str, Any]:
        """Write teacher.pt (atomically) for the students; the teacher itself has no ONNX export."""
        path = save_teacher(self.alg.model, self.env.spec, self.ctx.task_id, self.ctx.run.path)
        return {"teacher_checkpoint": str(path), "onnx": "skipped: the teacher reads sim-only privileged inputs"}


def warm_start_from_onnx(model: TeacherModel, path: Path) -> None:
    """Copy an exported PPO actor (normaliser + MLP, `s2r.policies.export`) into the teacher's policy path.

    The latent's columns of the first layer get a small random start (1% of the default), so the teacher
    acts as the given policy at first while gradients already reach its encoder. The normaliser's policy
    statistics are the policy's; its privileged ones start at (0, 1) and follow the rollouts, with the count
    set to 1e5 samples so the policy part moves little.

    Raises:
        AlgorithmTaskMismatch: No such file, or an actor of other widths (one sentence naming both).
    """
    from s2r.policies.warm_start import WarmStartError, onnx_actor

    onnx_path = path / "policy.onnx" if path.is_dir() else path
    if not onnx_path.is_file():
        raise AlgorithmTaskMismatch(f"init_from: no policy.onnx at {onnx_path}; give a ppo run folder or its policy.onnx")
    try:
        tensors, mean, div = onnx_actor(onnx_path)  # the one reader of exported actors (also `init_policy`)
    except WarmStartError as exc:
        raise AlgorithmTaskMismatch(f"init_from: {exc}") from exc
    w = {k: torch.as_tensor(v) for k, v in tensors.items()}
    names = sorted({k.rsplit(".", 1)[0] for k in w if k.startswith("model.actor.")}, key=lambda k: int(k.rsplit(".", 1)[1]))
    layers = [m for m in model.actor if isinstance(m, nn.Linear)]
    p = model.policy_dim
    want = [(lin.out_features, p if i == 0 else lin.in_features) for i, lin in enumerate(layers)]
    have = [tuple(w[n + ".weight"].shape) for n in names]
    if have != want:
        raise AlgorithmTaskMismatch(f"init_from {onnx_path} holds an actor with layers {have} but the teacher's policy path "
                                    f"needs {want} (policy.actor_hidden and the task's policy group must match)")
    norm = model.actor_norm
    with torch.no_grad():
        for i, (name, lin) in enumerate(zip(names, layers, strict=True)):
            if i == 0:
                lin.weight[:, p:] *= 0.01
                lin.weight[:, :p] = w[name + ".weight"]
            else:
                lin.weight.copy_(w[name + ".weight"])
            lin.bias.copy_(w[name + ".bias"])
        if isinstance(norm, EmpiricalNormalizer):
            norm.mean[:p] = torch.as_tensor(mean, dtype=norm.mean.dtype)
            norm.var[:p] = torch.as_tensor(div, dtype=norm.var.dtype) ** 2 - norm.eps
            norm.count.fill_(1e5)


def save_teacher(model: TeacherModel, spec: Any, task_id: str, run_dir: Path) -> Path:
    """Write `run_dir/teacher.pt`: weights, configs, and each group's width, frame width and history it read."""
    from s2r.sim.config import to_dict

    groups = {g: {"width": int(spec.group_dim(g)), "frame": int(spec.groups[g].frame_dim),
                  "history": int(spec.groups[g].history)}
              for g in dict.fromkeys((*model.cfg.actor_obs, *model.cfg.critic_obs))}
    blob = {"format": TEACHER_FORMAT, "task_id": task_id, "action_dim": model.action_dim, "groups": groups,
            "policy_cfg": to_dict(model.base_cfg), "encoder_cfg": to_dict(model.enc_cfg),
            "state_dict": model.state_dict()}
    path = Path(run_dir) / TEACHER_FILE
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class LoadedTeacher:
    """A teacher ready to label: the frozen model and what it read.

    Attributes:
        model: The teacher in eval mode, parameters frozen.
        groups: Group -> {"width", "frame", "history"} as it was trained.
        path: The teacher.pt it came from (for messages).
        task_id: The task it was trained on.
    """

    model: TeacherModel
    groups: dict[str, dict[str, int]]
    path: Path
    task_id: str

    def tail(self, obs: dict[str, torch.Tensor], groups: tuple[str, ...]) -> torch.Tensor:
        """The teacher's input over `groups` from a student's observations: the newest `width` values of each
        group (a student's longer history holds the teacher's frames at its end, oldest first)."""
        return torch.cat([obs[g][:, -self.groups[g]["width"]:] for g in groups], dim=-1)

    def actor_input(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw teacher actor input from a student's observation groups."""
        return self.tail(obs, self.model.cfg.actor_obs)

    def critic_input(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw teacher critic input from a student's observation groups."""
        return self.tail(obs, self.model.cfg.critic_obs)


def load_teacher(where: str | Path) -> LoadedTeacher:
    """Load a teacher from its run folder (or its teacher.pt).

    Raises:
        TeacherError: No teacher.pt there, or a file that is not one.
    """
    from s2r.sim.config import from_dict

    if not str(where):
        raise TeacherError("no teacher given: set teacher=<run folder of a --algo ppo-teacher run>")
    path = Path(where)
    path = path / TEACHER_FILE if path.is_dir() else path
    if not path.is_file():
        raise TeacherError(f"no {TEACHER_FILE} at {path}: train the teacher with `--algo ppo-teacher` (its export writes "
                           f"{TEACHER_FILE}) and pass teacher=<its run folder>")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or foreign file
        raise TeacherError(f"cannot read teacher {path}: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != TEACHER_FORMAT:
        raise TeacherError(f"{path} is not a teacher checkpoint of format {TEACHER_FORMAT}; re-export the teacher run")
    cfg = from_dict(ActorCriticConfig, blob["policy_cfg"])
    enc = from_dict(PrivilegedEncoderConfig, blob["encoder_cfg"])
    dims = {g: v["width"] for g, v in blob["groups"].items()}
    model = TeacherModel(dims, int(blob["action_dim"]), cfg, enc)
    model.load_state_dict(blob["state_dict"])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedTeacher(model=model, groups=blob["groups"], path=path, task_id=blob["task_id"])


def check_teacher_groups(teacher: LoadedTeacher, spec: Any, task_id: str) -> None:
    """Refuse a student task whose observation groups do not carry what the teacher read.

    Each group the teacher read must exist with the same frame width; the student may stack more frames
    (its history) but not fewer.

    Raises:
        TeacherError: One sentence naming the group and both sizes.
    """
    for g, want in teacher.groups.items():
        if g not in spec.groups:
            raise TeacherError(f"teacher {teacher.path} reads observation group '{g}' but task '{task_id}' has only "
                               f"{', '.join(sorted(spec.groups))}; train the student on the teacher's task")
        have = spec.groups[g]
        if have.is_image or have.frame_dim != want["frame"]:
            size = have.shape if have.is_image else have.frame_dim
            raise TeacherError(f"observation group '{g}' has {size} values per frame in task '{task_id}' but the "
                               f"teacher {teacher.path} was trained on {want['frame']}; train the student on the task "
                               "settings the teacher was trained with (or retrain the teacher)")
        if have.history < want["history"]:
            raise TeacherError(f"observation group '{g}' stacks {have.history} frames in task '{task_id}' but the "
                               f"teacher {teacher.path} reads {want['history']}; give the student at least as long a "
                               "history")
