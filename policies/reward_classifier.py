"""A learned success reward for human-in-the-loop runs: label frames, train a small CNN, export it to ONNX.

As in HIL-SERL, a binary classifier says "this frame shows success" and replaces a hand-written reward. What
differs here, and why:

- **No pretrained encoder.** Nothing can be downloaded, so the CNN (3 strided convs -> Dense 256 -> dropout ->
  LayerNorm -> 1 logit) trains from scratch on the labelled frames, with random-shift augmentation (DrQ's).
- **Balanced batches with mined hard negatives.** Half of each batch is success frames, half failure frames;
  half of those failure frames are the highest-scoring of a candidate draw from failed and intervened episodes
  (what the classifier currently mistakes for success), the rest uniform over all failure frames.
- **The threshold is picked, not tuned by hand.** Episodes are split train / calibration / test; the threshold
  is the lowest one whose false-positive rate on the calibration split's *failure episodes* stays at or below
  `target_fpr` (a false positive teaches the policy to fake success). Precision, recall and the false-positive
  rate are then reported on the test episodes, which played no part in training or in the threshold.

`collect_sim_labels` records a label file in MuJoCo (the simulator's success is the label, the scripted expert
with a failure rate drives); `train_classifier` trains and evaluates; `export_classifier` writes ONNX plus a
metadata JSON that `s2r.real.reward_classifier` checks (task, cameras, image size, inputs, threshold).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from s2r.policies.encoders import conv_stack, random_shift
from s2r.real.reward_classifier import CLASSIFIER_KIND, CLASSIFIER_VERSION
from s2r.real.reward_labels import LabelRecorder, LabelSet
from torch import nn


@dataclass(frozen=True, kw_only=True)
class ClassifierConfig:
    """How the reward classifier trains.

    Attributes:
        inputs: "image", "state" or "image+state".
        steps: Gradient steps (HIL-SERL trains ~150 on a pretrained encoder; from scratch needs more).
        batch_size: Frames per batch (half success, half failure).
        lr: AdamW learning rate.
        hard_fraction: Share of the failure half drawn as mined hard negatives (after `hard_after` steps).
        hard_after: Steps before mining starts (an untrained net's scores mean nothing).
        shift: Random-shift augmentation in pixels (pad and crop back).
        target_fpr: False-positive rate on held-out failure-episode frames that the threshold keeps to.
        split: (calibration, test) fractions of the episodes, each stratified by outcome.
        seed: Seed of the split, the init and the batches.
    """

    inputs: str = "image"
    steps: int = 400
    batch_size: int = 64
    lr: float = 3e-4
    hard_fraction: float = 0.5
    hard_after: int = 50
    shift: int = 4
    target_fpr: float = 0.02
    split: tuple[float, float] = (0.2, 0.2)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.inputs not in ("image", "state", "image+state"):
            raise ValueError(f"classifier inputs must be image, state or image+state, got {self.inputs!r}")
        if not 0.0 < self.target_fpr < 1.0:
            raise ValueError(f"classifier target_fpr must be in (0, 1), got {self.target_fpr}")
        if self.steps < 1 or self.batch_size < 2 or not 0.0 <= self.hard_fraction <= 1.0:
            raise ValueError("classifier needs steps >= 1, batch_size >= 2 and hard_fraction in [0, 1]")


class SuccessNet(nn.Module):
    """uint8 (B, H, W, 3) images and/or (B, D) state -> (B,) success logit; the /255 is inside the graph."""

    def __init__(self, image_size: tuple[int, int] | None, state_dim: int | None) -> None:
        super().__init__()
        self.use_image, self.use_state = image_size is not None, state_dim is not None
        width = 0
        if self.use_image:
            # Flattened feature map into the dense layer: it keeps where things are (the cube above the table),
            # which a global pool would throw away. Sized from the image, so any size exports to ONNX.
            self.conv = conv_stack(3, (16, 32, 32), (2, 2, 2), padding=1)  # the trunk the policy encoder uses too
            with torch.no_grad():
                width += self.conv(torch.zeros(1, 3, *image_size)).shape[1]
        if self.use_state:
            # Normaliser inside the graph (set from the training frames): positions in m and velocities differ by 100x.
            self.register_buffer("state_mean", torch.zeros(state_dim))
            self.register_buffer("state_std", torch.ones(state_dim))
            self.state_mlp = nn.Sequential(nn.Linear(state_dim, 64), nn.ReLU())
            width += 64
        self.head = nn.Sequential(nn.Linear(width, 256), nn.Dropout(0.1), nn.LayerNorm(256), nn.ReLU(), nn.Linear(256, 1))

    def forward(self, image: torch.Tensor | None = None, state: torch.Tensor | None = None) -> torch.Tensor:
        feats = []
        if self.use_image:
            feats.append(self.conv(image.permute(0, 3, 1, 2).float() / 255.0))
        if self.use_state:
            feats.append(self.state_mlp((state - self.state_mean) / self.state_std))
        return self.head(torch.cat(feats, dim=1)).squeeze(1)


def split_episodes(labels: LabelSet, split: tuple[float, float], seed: int) -> dict[str, np.ndarray]:
    """Frame masks for train / calib / test, split by episode and stratified by the episode's outcome."""
    rng = np.random.default_rng(seed)
    episodes = np.unique(labels.episode)
    outcome = {int(e): bool(labels.episode_success[labels.episode == e][0]) for e in episodes}
    parts: dict[str, list[int]] = {"train": [], "calib": [], "test": []}
    for success in (True, False):
        eps = rng.permutation([e for e in episodes if outcome[int(e)] == success])
        n_cal, n_test = (max(1, round(f * len(eps))) if len(eps) >= 3 else 0 for f in split)
        parts["calib"] += list(eps[:n_cal])
        parts["test"] += list(eps[n_cal:n_cal + n_test])
        parts["train"] += list(eps[n_cal + n_test:])
    return {k: np.isin(labels.episode, v) for k, v in parts.items()}


def pick_threshold(failure_scores: np.ndarray, target_fpr: float) -> float:
    """Lowest threshold t (score >= t is success) with at most `target_fpr` of `failure_scores` at or above t."""
    # float32 throughout: scores are float32 (torch and onnxruntime), and numpy compares float32 arrays with a Python
    # float in float32, so a float64 "just above" would round back onto the score it must exclude.
    s = np.sort(np.asarray(failure_scores, dtype=np.float32))[::-1]
    allowed = int(np.floor(target_fpr * len(s)))  # failure frames that may score at or above t
    if allowed >= len(s):
        return 0.0
    return float(np.nextafter(s[allowed], np.float32(np.inf)))  # just above the first failure frame that must stay below


def metrics(scores: np.ndarray, labels: np.ndarray, failure_frames: np.ndarray, episode: np.ndarray,
            threshold: float) -> dict[str, float]:
    """Precision, recall, FPR on failure-episode frames, and the share of failure episodes a false positive would end."""
    pred = scores >= threshold
    pos = labels == 1
    tp, fp = int((pred & pos).sum()), int((pred & ~pos).sum())
    fail_eps = np.unique(episode[failure_frames])
    ended = [bool(pred[failure_frames & (episode == e)].any()) for e in fail_eps]
    return {"precision": tp / max(1, tp + fp), "recall": tp / max(1, int(pos.sum())),
            "fpr_failure_episodes": float(pred[failure_frames].mean()) if failure_frames.any() else float("nan"),
            "fpr_all_negatives": float(pred[~pos].mean()) if (~pos).any() else float("nan"),
            "failure_episodes_ended_by_false_positive": float(np.mean(ended)) if ended else float("nan"),
            "positives": int(pos.sum()), "negatives": int((~pos).sum()), "failure_episodes": len(fail_eps)}


@dataclass
class TrainedClassifier:
    """A trained net, its picked threshold, the held-out numbers and what the export metadata needs."""

    net: SuccessNet
    threshold: float
    calib: dict[str, float]
    test: dict[str, float]
    meta: dict[str, Any]
    cfg: ClassifierConfig
    losses: list[float]
    held_out: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)  # scores + labels per split

    def at_target(self, target_fpr: float) -> tuple[float, dict[str, float], dict[str, float]]:
        """(threshold, calib, test) for another target false-positive rate, without retraining."""
        cal = self.held_out["calib"]
        threshold = pick_threshold(cal["scores"][cal["failure"]], target_fpr)
        out = [metrics(h["scores"], h["label"], h["failure"], h["episode"], threshold)
               for h in (self.held_out["calib"], self.held_out["test"])]
        return threshold, out[0], out[1]


def train_classifier(labels: LabelSet, cfg: ClassifierConfig = ClassifierConfig(),
                     log: Callable[[str], None] | None = None) -> TrainedClassifier:
    """Train on the label set's train episodes, pick the threshold on calibration failures, report on test."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    use_image, use_state = "image" in cfg.inputs, "state" in cfg.inputs
    if use_image and labels.image is None:
        raise ValueError(f"classifier inputs {cfg.inputs!r} need images but the label file has none; record with images "
                         "or use --inputs state")
    if use_state and labels.state is None:
        raise ValueError(f"classifier inputs {cfg.inputs!r} need state but the label file has none; use --inputs image")
    masks = split_episodes(labels, cfg.split, cfg.seed)
    y = labels.label.astype(np.int64)
    failure_frames = ~labels.episode_success & (y == 0)  # a failed episode may still hold operator-labelled successes
    train = masks["train"]
    pos_idx = np.flatnonzero(train & (y == 1))
    neg_idx = np.flatnonzero(train & (y == 0))
    hard_pool = np.flatnonzero(train & (y == 0) & (failure_frames | labels.intervened))
    if len(pos_idx) == 0 or len(neg_idx) == 0:
        raise ValueError("the training episodes hold only one class after the held-out split; record more episodes")
    image = torch.from_numpy(labels.image) if use_image else None
    state = torch.from_numpy(labels.state) if use_state else None
    image_size = tuple(labels.image.shape[1:3]) if use_image else None
    net = SuccessNet(image_size, labels.state.shape[1] if use_state else None)
    if use_state:
        train_state = labels.state[train]
        net.state_mean.copy_(torch.from_numpy(train_state.mean(0)))
        net.state_std.copy_(torch.from_numpy(train_state.std(0) + 1e-3))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr)

    def batch(idx: np.ndarray, augment: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        t = torch.from_numpy(idx)
        img = image[t] if image is not None else None
        if img is not None and augment:
            img = random_shift(img, cfg.shift, gen)
        return img, (state[t] if state is not None else None)

    def score(idx: np.ndarray) -> np.ndarray:
        net.eval()
        out = []
        with torch.no_grad():
            for chunk in np.array_split(idx, max(1, len(idx) // 256)):
                out.append(torch.sigmoid(net(*batch(chunk, False))).numpy())
        net.train()
        return np.concatenate(out) if out else np.zeros(0)

    half = cfg.batch_size // 2
    losses = []
    t0 = time.monotonic()
    for step in range(cfg.steps):
        n_hard = round(cfg.hard_fraction * half) if step >= cfg.hard_after and len(hard_pool) else 0
        neg = rng.choice(neg_idx, half - n_hard)
        if n_hard:  # mined: the failure frames the net currently scores most like success
            cand = rng.choice(hard_pool, min(len(hard_pool), 4 * n_hard), replace=False)
            neg = np.concatenate([neg, cand[np.argsort(-score(cand))[:n_hard]]])
        idx = np.concatenate([rng.choice(pos_idx, half), neg])
        target = torch.from_numpy(np.concatenate([np.ones(half), np.zeros(len(neg))]).astype(np.float32))
        loss = nn.functional.binary_cross_entropy_with_logits(net(*batch(idx, True)), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if log and (step + 1) % max(1, cfg.steps // 5) == 0:
            log(f"step {step + 1}/{cfg.steps}  loss {np.mean(losses[-20:]):.4f}  ({time.monotonic() - t0:.0f} s)")
    net.eval()
    results = {}
    for part in ("calib", "test"):
        idx = np.flatnonzero(masks[part])
        results[part] = (idx, score(idx))
    cal_idx, cal_scores = results["calib"]
    cal_fail = failure_frames[cal_idx]
    if not cal_fail.any():
        raise ValueError("no failure episode in the calibration split, so no threshold can be picked for a false-positive "
                         "rate; record more failed episodes")
    threshold = pick_threshold(cal_scores[cal_fail], cfg.target_fpr)
    out = {part: metrics(s, y[idx], failure_frames[idx], labels.episode[idx], threshold)
           for part, (idx, s) in results.items()}
    meta = {"task": labels.task, "cameras": labels.meta.get("cameras", []) if use_image else [],
            "image_size": list(image_size) if image_size else None,
            "state_dim": int(labels.state.shape[1]) if use_state else None, "inputs": cfg.inputs}
    held_out = {part: {"scores": sc, "label": y[idx], "failure": failure_frames[idx], "episode": labels.episode[idx]}
                for part, (idx, sc) in results.items()}
    return TrainedClassifier(net=net, threshold=threshold, calib=out["calib"], test=out["test"], meta=meta, cfg=cfg,
                             losses=losses, held_out=held_out)


class _Exported(nn.Module):
    """ONNX graph: inputs as the robot has them, output the success probability."""

    def __init__(self, net: SuccessNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        image = inputs[0] if self.net.use_image else None
        state = inputs[-1] if self.net.use_state else None
        return torch.sigmoid(self.net(image, state))


def export_classifier(trained: TrainedClassifier, path: str | Path, labels_file: str = "") -> Path:
    """Write `<path>` (ONNX) and `<path>.json` (metadata), and check onnxruntime agrees with torch."""
    import onnxruntime as ort

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    m = trained.meta
    names, dummies = [], []
    if m["image_size"]:
        names.append("image")
        dummies.append(torch.randint(0, 255, (2, *m["image_size"], 3), dtype=torch.uint8))
    if m["state_dim"]:
        names.append("state")
        dummies.append(torch.randn(2, m["state_dim"]))
    model = _Exported(trained.net).eval()
    tmp = path.with_name(path.name + ".tmp")
    torch.onnx.export(model, tuple(dummies), str(tmp), input_names=names, output_names=["success_prob"],
                      dynamic_axes={**{n: {0: "batch"} for n in names}, "success_prob": {0: "batch"}}, dynamo=False)
    meta = {"kind": CLASSIFIER_KIND, "version": CLASSIFIER_VERSION, **m, "threshold": trained.threshold,
            "target_fpr": trained.cfg.target_fpr, "inputs_order": names, "output": "success_prob",
            "config": dataclasses.asdict(trained.cfg), "calib": trained.calib, "test": trained.test,
            "labels_file": labels_file}
    import onnx

    proto = onnx.load(str(tmp))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "s2r_reward_classifier", json.dumps(meta)
    onnx.save(proto, str(tmp))
    sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    got = sess.run(None, {n: d.numpy() for n, d in zip(names, dummies, strict=True)})[0]
    with torch.no_grad():
        want = model(*dummies).numpy()
    if not np.allclose(got, want, atol=1e-5):
        raise RuntimeError(f"exported classifier disagrees with torch by {np.abs(got - want).max():.2e}")
    tmp.replace(path)
    path.with_name(path.name + ".json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def collect_sim_labels(task: str, episodes: int, *, image_size: tuple[int, int] | None = (64, 64), state: bool = True,
                       num_envs: int = 4, failure_rate: float = 0.5, noise: float = 0.1, seed: int = 0,
                       after_success: int = 0, log: Callable[[str], None] | None = None) -> LabelRecorder:
    """Run the task's scripted expert (failing on purpose in `failure_rate` of episodes) and label by the simulator.

    A frame is labelled success on the step the simulator reports success (that episode then ends); every other
    frame is a failure frame. Frames come from the `image` group (rendered by MuJoCo) and/or the `policy` group.
    With `after_success` > 0 the episode runs on for that many frames after its first success, each labelled by
    the simulator's success on that frame (the cube still in place, or not): one success frame per episode is
    too few to learn where success begins, and an operator holding the label key would give several too.
    """
    from s2r.sim import make
    from s2r.sim.registry import get_task
    from s2r.sim.tasks.experts import make_expert

    cfg = get_task(task).cfg
    if image_size is not None:
        if not hasattr(cfg, "image"):
            raise ValueError(f"task {task} has no image group; label it with --no-image (state only)")
        cfg = dataclasses.replace(cfg, image=True, image_size=tuple(image_size))
    if after_success > 0:
        if not hasattr(cfg, "success_ends_episode"):
            raise ValueError(f"task {task} always ends an episode at success; label it with after_success=0")
        cfg = dataclasses.replace(cfg, success_ends_episode=False)
    env = make(task, num_envs, cfg=cfg, seed=seed)
    try:
        expert = make_expert(task, num_envs, noise=noise, failure_rate=failure_rate, seed=seed, cfg=cfg)
        camera = (cfg.image_camera,) if image_size is not None else ()
        state_dim = env.spec.groups["policy"].shape[-1] if state else None
        recs = [LabelRecorder(task, cameras=camera, image_size=image_size, state_dim=state_dim, source="sim")
                for _ in range(num_envs)]
        obs = env.reset(seed=seed)
        expert.reset()
        done_eps = 0
        since = np.full(num_envs, -1)  # frames since the episode's first success (-1: none yet)
        reached = np.zeros(num_envs, dtype=bool)

        def add(rec: LabelRecorder, o: dict[str, np.ndarray], i: int, label: bool) -> None:
            rec.add(label=label, image=o["image"][i] if image_size is not None else None,
                    state=o["policy"][i] if state else None)

        for i in range(num_envs):
            add(recs[i], obs, i, False)
        while done_eps < episodes:
            nxt, _, term, trunc, info = env.step(expert.act(obs))
            success = np.asarray(info["success"], dtype=bool)
            reached |= success
            since = np.where(reached, since + 1, -1)
            cut = (since >= after_success) & ~(term | trunc) & reached  # held long enough: end it here
            final = info.get("final_obs", nxt)
            if cut.any():
                nxt = {k: v.copy() for k, v in nxt.items()}
                fresh = env.end_episodes(np.flatnonzero(cut))
                for k in nxt:
                    nxt[k][cut] = fresh[k]
            done = term | trunc | cut
            for i in range(num_envs):
                if done[i]:
                    add(recs[i], final, i, bool(success[i]))
                    recs[i].end_episode(bool(reached[i]))
                    done_eps += 1
                    add(recs[i], nxt, i, False)  # the first frame of the next episode
                else:
                    add(recs[i], nxt, i, bool(success[i]) if after_success > 0 else False)
            reached[done] = False
            since[done] = -1
            if done.any():
                expert.reset(np.flatnonzero(done))
                if log and done_eps % max(1, episodes // 5) < done.sum():
                    log(f"{done_eps}/{episodes} episodes")
            obs = nxt
    finally:
        env.close()
    merged = LabelRecorder(task, cameras=camera, image_size=image_size, state_dim=state_dim, source="sim")
    for rec in recs:
        merged.extend(rec)
    return merged
