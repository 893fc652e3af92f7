"""Behaviour cloning with action chunking and temporal ensembling, trained from recorded episodes.

The network predicts the next `k` actions from one observation. At run time every step emits a fresh
chunk and the executed action averages what the last `k` chunks said about the current step (temporal
ensembling), which smooths the jitter single-step cloning shows on noisy demos. The exported graph takes
its own past chunks as inputs (see `s2r.real.chunking`), so the robot side runs it with a small history
buffer and no torch. The same graph wrapper carries a residual policy on top (`s2r.policies.residual`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from s2r.policies.algorithm import Algorithm, AlgorithmTaskMismatch, RunContext, register_algorithm
from s2r.policies.export import ExportError, build_metadata, export_onnx_checked
from s2r.policies.networks import EmpiricalNormalizer, mlp
from s2r.policies.offpolicy_config import residual_scale
from s2r.real.chunking import MASK_INPUT, STATE_INPUT, STATE_OUTPUT, ChunkHistory, ensemble_weights
from s2r.real.episodes import Episode, read_episodes
from s2r.real.metadata import ChunkingSection, ResidualSection
from torch import nn

BC_CHECKPOINT = "bc.pt"


@dataclass(frozen=True, kw_only=True)
class BCConfig:
    """Behaviour-cloning settings.

    Attributes:
        demos: Episode folder to clone (empty: demos/<task>).
        obs_groups: Observation groups the policy reads (what the robot senses).
        chunk: Actions predicted per step (k); 1 is plain single-step cloning.
        ensemble_m: Temporal-ensembling weight exp(m * age); 0 averages the chunks uniformly, m > 0 favours
            older predictions (ACT's choice), m < 0 newer ones. With end-effector delta actions the older
            predictions lag the state: on Panda-Insert-Peg the same network succeeds 64% at m = 0.1 and
            99% at m = -0.5 (100 episodes), hence the default.
        hidden: Hidden layer widths.
        activation: Hidden activation.
        layer_norm: LayerNorm after each hidden layer.
        lr: Adam learning rate.
        weight_decay: AdamW weight decay.
        batch_size: Samples per gradient step.
        updates: Gradient steps.
        successful_only: Clone only episodes that succeeded.
        seed: Torch seed.
        torch_threads: Intra-op threads while fitting; one is fastest for nets this small (more threads only
            add synchronisation, and on a busy machine they wait for each other).
    """

    demos: str = ""
    obs_groups: tuple[str, ...] = ("policy",)
    chunk: int = 4
    ensemble_m: float = -0.5
    hidden: tuple[int, ...] = (256, 256, 256)
    activation: str = "relu"
    layer_norm: bool = True
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    updates: int = 4000
    successful_only: bool = True
    seed: int = 0
    torch_threads: int = 1


class ChunkedBC(nn.Module):
    """obs (B, obs_dim) -> chunk (B, k, A) in [-1, 1], with the demo observation statistics baked in."""

    def __init__(self, obs_dim: int, action_dim: int, cfg: BCConfig) -> None:
        super().__init__()
        self.obs_dim, self.action_dim, self.chunk = obs_dim, action_dim, cfg.chunk
        self.normalizer = EmpiricalNormalizer(obs_dim)
        self.net = mlp(obs_dim, cfg.hidden, cfg.chunk * action_dim, cfg.activation, layer_norm=cfg.layer_norm)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        n = self.normalizer
        x = torch.clamp((obs - n.mean) / torch.sqrt(n.var + n.eps), -n.clip, n.clip)
        return torch.tanh(self.net(x)).view(-1, self.chunk, self.action_dim)


def temporal_ensemble(chunk: torch.Tensor, past: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The current step's action from the fresh chunk and the past ones.

    Args:
        chunk: (B, k, A) chunk emitted now; its first action is the newest prediction for this step.
        past: (B, k-1, k, A); past[:, j] was emitted j+1 steps ago, so its entry j+1 is about this step.
        mask: (B, k-1) 1 where that past chunk exists.
        weights: (k,) weight by age (0 = now).

    Returns:
        (B, A) weighted mean of the available predictions.
    """
    k = chunk.shape[1]
    if k == 1:
        return chunk[:, 0]
    idx = torch.arange(1, k)
    preds = past[:, idx - 1, idx]  # (B, k-1, A): what each past chunk said about now
    w_past = mask * weights[1:]  # (B, k-1)
    num = weights[0] * chunk[:, 0] + (w_past.unsqueeze(-1) * preds).sum(1)
    return num / (weights[0] + w_past.sum(1, keepdim=True))


class ChunkedPolicyGraph(nn.Module):
    """What gets exported: base chunk -> ensembled base action (-> + scale * residual) -> actions, chunk.

    `residual` maps (obs, base_action) to a correction in [-1, 1]; without it the graph is the base alone.
    """

    def __init__(self, base: ChunkedBC, ensemble_m: float, residual: nn.Module | None = None,
                 scale: float | tuple[float, ...] = 0.0) -> None:
        super().__init__()
        self.base = base
        self.residual = residual
        # One number, or one per action dimension (a constant of the graph either way).
        self.scale = residual_scale(scale)
        self.ensemble_m = float(ensemble_m)
        self.register_buffer("weights", torch.from_numpy(ensemble_weights(base.chunk, ensemble_m)))

    def forward(self, obs: torch.Tensor, past_chunks: torch.Tensor, past_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = self.base(obs)
        action = temporal_ensemble(chunk, past_chunks, past_mask, self.weights)
        if self.residual is not None:
            action = torch.clamp(action + self.scale * self.residual(obs, action), -1.0, 1.0)
        return action, chunk


def demo_dataset(episodes: list[Episode], groups: tuple[str, ...], chunk: int,
                 successful_only: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(obs, target chunks, valid mask) from episodes; steps past an episode's end are masked out.

    Returns:
        obs (N, obs_dim), targets (N, k, A), mask (N, k).
    """
    xs, ys, ms = [], [], []
    for ep in episodes:
        if successful_only and not ep.success:
            continue
        t_len = ep.length
        obs = np.concatenate([ep.obs[g][:t_len] for g in groups], axis=1)
        pad = np.concatenate([ep.actions, np.repeat(ep.actions[-1:], chunk - 1, axis=0)])
        idx = np.arange(t_len)[:, None] + np.arange(chunk)[None]
        xs.append(obs)
        ys.append(pad[idx])
        ms.append((idx < t_len).astype(np.float32))
    if not xs:
        raise ValueError("no episode to clone: none succeeded (set successful_only=False to clone them anyway)")
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.float32), np.concatenate(ms)


class BCFit:
    """The masked-L1 chunk regression, stepped in slices (the run driver iterates it; `fit_bc` runs it whole)."""

    def __init__(self, model: ChunkedBC, obs: np.ndarray, targets: np.ndarray, mask: np.ndarray, cfg: BCConfig) -> None:
        torch.manual_seed(cfg.seed)
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self.model, self.cfg = model, cfg
        self.x, self.y = torch.from_numpy(obs), torch.from_numpy(targets)
        self.m = torch.from_numpy(mask).unsqueeze(-1)
        model.normalizer.update(self.x)
        self.opt = torch.optim.AdamW(model.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, cfg.updates)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.updates = 0

    def step(self, n: int) -> float:
        """`n` gradient steps; returns the last loss."""
        x, y, m, cfg = self.x, self.y, self.m, self.cfg
        loss = torch.zeros(())
        for _ in range(n):
            b = torch.randint(0, len(x), (min(cfg.batch_size, len(x)),), generator=self.gen)
            # L1 keeps the fine approach motions precise where MSE averages them into mush (as ACT found).
            loss = ((self.model(x[b]) - y[b]).abs() * m[b]).sum() / (m[b].sum() * y.shape[-1])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"behaviour-cloning loss became {loss.item()} at update {self.updates}")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            self.updates += 1
        return loss.item()

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "gen": self.gen.get_state(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.gen.set_state(state["gen"])
        self.updates = int(state["updates"])


def fit_bc(model: ChunkedBC, obs: np.ndarray, targets: np.ndarray, mask: np.ndarray, cfg: BCConfig) -> list[float]:
    """Fit the chunk predictor with a masked L1 loss; returns the loss every 100 updates."""
    fit = BCFit(model, obs, targets, mask, cfg)
    losses = []
    while fit.updates < cfg.updates:
        losses.append(fit.step(min(100, cfg.updates - fit.updates)))
    return losses


def export_chunked(graph: ChunkedPolicyGraph, spec: Any, task_id: str, out_dir: Path, parity_obs: np.ndarray, *,
                   algo: str = "bc", residual: ResidualSection | None = None, info: dict[str, Any] | None = None,
                   tol: float = 1e-5) -> dict[str, float]:
    """Write policy.onnx + policy.json for a chunked graph and check onnxruntime parity over a rollout of states.

    Args:
        graph: The deployable graph.
        spec: The env's spec.
        task_id: Task id recorded in the metadata.
        out_dir: Folder to write into.
        parity_obs: (n, obs_dim) observations for the parity check.
        algo: Id of the algorithm that trained it ("bc", "residual").
        residual: The metadata's residual section (a residual or fine-tuned run).
        info: Free-form notes for the metadata (never read by the runtime).
        tol: Largest allowed absolute difference between torch and onnxruntime.
    """
    graph = graph.eval()
    k, a_dim, obs_dim = graph.base.chunk, graph.base.action_dim, graph.base.obs_dim
    if parity_obs.ndim != 2 or parity_obs.shape[1] != obs_dim:
        raise ExportError(f"parity observations have shape {parity_obs.shape}; the policy reads {obs_dim} values")
    meta = dataclasses.replace(build_metadata(spec, task_id, obs_dim, algo=algo), residual=residual, info=dict(info or {}))
    if k == 1:
        # Nothing to ensemble: a plain one-input graph, which every runtime runs without a chunk history.
        plain = _SingleStep(graph).eval()
        return export_onnx_checked(plain, (torch.zeros(1, obs_dim),), ["obs"], ["actions"], out_dir,
                                   {"obs": parity_obs.astype(np.float32)}, meta, tol)
    meta = dataclasses.replace(meta, chunking=ChunkingSection(size=k, ensemble_m=float(graph.ensemble_m),
                                                              state_input=STATE_INPUT, mask_input=MASK_INPUT,
                                                              state_output=STATE_OUTPUT))
    out_dir.mkdir(parents=True, exist_ok=True)
    hist = ChunkHistory(len(parity_obs), k, a_dim)
    hist.past = np.random.default_rng(0).uniform(-1, 1, hist.past.shape).astype(np.float32)
    hist.mask[:, : hist.mask.shape[1] // 2 + 1] = 1.0
    names = ["obs", STATE_INPUT, MASK_INPUT]
    example = (torch.zeros(1, obs_dim), torch.zeros(1, *hist.past.shape[1:]), torch.zeros(1, hist.mask.shape[1]))
    feed = {"obs": parity_obs.astype(np.float32), **hist.feed()}
    return export_onnx_checked(graph, example, names, ["actions", STATE_OUTPUT], out_dir, feed, meta, tol)


class _SingleStep(nn.Module):
    """A chunk-1 graph without its (unused) history inputs."""

    def __init__(self, graph: ChunkedPolicyGraph) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        a = self.graph.base.action_dim
        return self.graph(obs, obs.new_zeros(obs.shape[0], 1, 1, a), obs.new_zeros(obs.shape[0], 1))[0]


def save_bc(path: Path, model: ChunkedBC, cfg: BCConfig, task_id: str, extra: dict[str, Any] | None = None) -> None:
    """Atomic checkpoint of a BC model (weights + the config to rebuild it)."""
    from s2r.policies.driver import save_atomic

    save_atomic({"kind": "chunked_bc", "task_id": task_id, "obs_dim": model.obs_dim, "action_dim": model.action_dim,
                 "cfg": asdict(cfg), "model": model.state_dict(), **(extra or {})}, path)


def load_bc(run_dir: str | Path) -> tuple[ChunkedBC, BCConfig, dict[str, Any]]:
    """Rebuild a BC model from a run folder (or its bc.pt)."""
    path = Path(run_dir)
    path = path / BC_CHECKPOINT if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no behaviour-cloning checkpoint at {path} (train one with `s2r train-bc <task>`)")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "chunked_bc":
        raise ValueError(f"{path} is not a behaviour-cloning checkpoint")
    raw = dict(ckpt["cfg"])
    cfg = BCConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    model = ChunkedBC(ckpt["obs_dim"], ckpt["action_dim"], cfg)
    model.load_state_dict(ckpt["model"])
    return model.eval(), cfg, ckpt


@register_algorithm
class BehaviourCloning(Algorithm):
    """Action-chunking BC from an episode folder; `--steps` counts gradient updates."""

    algo_id = "bc"
    config_cls = BCConfig
    unit = "updates"
    curve = (("loss", "masked L1 loss"),)
    postfix = (("loss", "loss"),)
    description = "behaviour cloning with action chunking and temporal ensembling, from recorded demos"

    def __init__(self, ctx: RunContext) -> None:
        from s2r.sim import make

        cfg: BCConfig = ctx.cfg
        self.ctx, self.cfg = ctx, cfg
        self.demos = Path(cfg.demos) if cfg.demos else Path("demos") / ctx.task_id
        self.default_steps = cfg.updates  # the cosine schedule spans cfg.updates
        self.env = make(ctx.task_id, 8, cfg=ctx.task_cfg, seed=cfg.seed)
        try:
            missing = [g for g in cfg.obs_groups if g not in self.env.obs_dims]
            if missing:
                raise AlgorithmTaskMismatch(f"bc reads vector observation groups; {ctx.task_id} has no vector group "
                                            f"{missing[0]!r} (it has {sorted(self.env.obs_dims)}): set obs_groups")
            dims = {g: self.env.obs_dims[g] for g in cfg.obs_groups}
            _, self.episodes = read_episodes(self.demos, task=ctx.task_id, obs_dims=dims, action_dim=self.env.spec.action_dim)
            x, y, m = demo_dataset(self.episodes, cfg.obs_groups, cfg.chunk, cfg.successful_only)
            self.samples = len(x)
            self.model = ChunkedBC(x.shape[1], self.env.spec.action_dim, cfg)
            self.fit = BCFit(self.model, x, y, m, cfg)
        except BaseException:
            self.env.close()
            raise

    def iterate(self) -> dict[str, float]:
        loss = self.fit.step(min(100, max(self.cfg.updates - self.fit.updates, 1)))
        self.progress = self.fit.updates
        return {"loss": loss, "episodes": float(len(self.episodes)), "samples": float(self.samples)}

    def state_dict(self) -> dict[str, Any]:
        return self.fit.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fit.load_state_dict(state)

    def export(self) -> dict[str, float]:
        from s2r.sim.env import sample_obs

        run = self.ctx.run.path
        # bc.pt: the frozen model file residual RL and fine-tuning load as their base.
        save_bc(run / BC_CHECKPOINT, self.model, self.cfg, self.ctx.task_id, {"demos": str(self.demos)})
        parity = sample_obs(self.env, 8, seed=self.cfg.seed)["policy"]
        return export_chunked(ChunkedPolicyGraph(self.model.eval(), self.cfg.ensemble_m), self.env.spec, self.ctx.task_id,
                              run, parity)

    def close(self) -> None:
        self.env.close()


def train_bc(task_id: str, demos: str | Path, run_dir: str | Path, cfg: BCConfig | None = None,
             task_overrides: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Clone a task's demos into a run folder through the run driver (bc.pt, policy.onnx + policy.json, config.json).

    Raises:
        EpisodeFormatError: demos missing, truncated, or recorded for another task or other dims.
    """
    from dataclasses import replace

    from s2r.policies.driver import RunSpec, train
    from s2r.sim import task_config

    cfg = replace(cfg or BCConfig(), demos=str(demos))
    spec = RunSpec(algo="bc", task_id=task_id, task_cfg=task_config(task_id, task_overrides), cfg=cfg, seed=cfg.seed)
    res = train(spec, run_dir, progress=progress)
    return {"episodes": int(res.get("episodes", 0)), "samples": int(res.get("samples", 0)), "final_loss": res.get("loss"),
            "fit_s": res["wall_time_s"], "export": res["export"]}
