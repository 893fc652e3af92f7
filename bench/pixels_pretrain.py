"""Does pretraining the image encoder on simulated frames help the off-policy learner? A synthetic check.

    python bench/pixels_pretrain.py --seeds 0 1 2 3 --out bench/results/pixels_pretrain.json

The task is the one of `tests/policies/test_pixel_learning.py`: a 32x32 frame with a red 10x10 square in the
left or right half, reward = action * side, one-step episodes; the state group is noise. Two arms, same learner,
same replay (512 random-action transitions), same seeds:

- `scratch`: the encoder starts from its random init (what the learners do today).
- `pretrained`: the encoder is first fit, with a linear head, to regress the square's centre (x, y) from 512
  *other* simulated frames (`--pretrain-steps` Adam steps, the simulator's ground truth as the label: what a
  pretraining on rendered frames with known object poses would do), then copied into the learner's online and
  target encoders.

Reported per seed: updates until the deterministic actor is right on >= 90 % of 200 held-out frames (checked
every `--check-every` updates, capped at `--max-updates`), and the wall time of the pretraining.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from s2r.policies.encoders import CameraEncoder, EncoderConfig
from s2r.policies.offpolicy import OffPolicyConfig, OffPolicyLearner
from s2r.policies.replay import ReplayBuffer

SIZE, SQUARE = 32, 10
SHAPES = {"policy": (2,), "image": (SIZE, SIZE, 3)}
DTYPES = {"policy": "float32", "image": "uint8"}
ENC = EncoderConfig(image_groups=("image",), feature_dim=16, channels=8, num_layers=2, pad=2)
CFG = OffPolicyConfig(actor_hidden=(64,), critic_hidden=(64,), num_critics=2, batch_size=32, critic_lr=1e-3,
                      actor_lr=1e-3, init_alpha=0.1, encoder=ENC)


def frames(rng: np.random.Generator, n: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(obs, side in {-1, 1}, square centre (n, 2) in [0, 1])."""
    side = rng.choice([-1.0, 1.0], n)
    images = np.full((n, SIZE, SIZE, 3), 90, dtype=np.uint8)
    centre = np.zeros((n, 2), dtype=np.float32)
    for i, s in enumerate(side):
        x = rng.integers(0, SIZE // 2 - SQUARE + 1) + (SIZE // 2 if s > 0 else 0)
        y = rng.integers(0, SIZE - SQUARE + 1)
        images[i, y:y + SQUARE, x:x + SQUARE] = (220, 30, 30)
        centre[i] = ((x + SQUARE / 2) / SIZE, (y + SQUARE / 2) / SIZE)
    return {"policy": rng.normal(size=(n, 2)).astype(np.float32), "image": images}, side, centre


def pretrain(seed: int, steps: int) -> tuple[dict, float, float]:
    """Encoder state after regressing square centres; (state, final MSE, wall seconds)."""
    torch.manual_seed(10_000 + seed)
    obs, _, centre = frames(np.random.default_rng(10_000 + seed), 512)
    enc = CameraEncoder((SIZE, SIZE, 3), ENC)
    head = torch.nn.Linear(ENC.feature_dim, 2)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=1e-3)
    x, y = torch.from_numpy(obs["image"]), torch.from_numpy(centre)
    gen = torch.Generator().manual_seed(seed)
    t = time.perf_counter()
    loss = torch.zeros(())
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        loss = (head(enc(x[idx])) - y[idx]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return enc.state_dict(), float(loss.detach()), time.perf_counter() - t


def updates_to_solve(seed: int, encoder_state: dict | None, check_every: int, max_updates: int) -> int | None:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    learner = OffPolicyLearner(SHAPES, 1, CFG, obs_dtypes=DTYPES)
    if encoder_state is not None:
        learner.encoder.cameras["image"].load_state_dict(encoder_state)
        learner.encoder_target.load_state_dict(learner.encoder.state_dict())
    buf = ReplayBuffer(SHAPES, 1, capacity=1024, num_envs=64, obs_dtypes=DTYPES)
    for _ in range(8):
        obs, side, _ = frames(rng, 64)
        action = rng.uniform(-1.0, 1.0, (64, 1)).astype(np.float32)
        buf.add(obs, action, action[:, 0] * side, obs, np.ones(64, bool), np.zeros(64, bool))
    test_obs, test_side, _ = frames(np.random.default_rng(1), 200)
    gen = torch.Generator().manual_seed(seed)
    done = 0
    while done < max_updates:
        learner.update_from(buf, num_updates=check_every, generator=gen)
        done += check_every
        if np.mean(np.sign(learner.act(test_obs, deterministic=True).numpy()[:, 0]) == test_side) >= 0.9:
            return done
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--pretrain-steps", type=int, default=300)
    p.add_argument("--check-every", type=int, default=10)
    p.add_argument("--max-updates", type=int, default=400)
    p.add_argument("--out", default="bench/results/pixels_pretrain.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "seeds": args.seeds,
           "pretrain_steps": args.pretrain_steps, "check_every": args.check_every, "max_updates": args.max_updates,
           "loadavg_start": os.getloadavg(), "runs": []}
    for seed in args.seeds:
        state, mse, wall = pretrain(seed, args.pretrain_steps)
        t = time.perf_counter()
        scratch = updates_to_solve(seed, None, args.check_every, args.max_updates)
        t_scratch = time.perf_counter() - t
        t = time.perf_counter()
        pre = updates_to_solve(seed, state, args.check_every, args.max_updates)
        row = {"seed": seed, "scratch_updates_to_90": scratch, "pretrained_updates_to_90": pre,
               "pretrain_mse": mse, "pretrain_wall_s": wall, "scratch_wall_s": t_scratch,
               "pretrained_wall_s": time.perf_counter() - t}
        print(json.dumps(row), flush=True)
        out["runs"].append(row)
    out["loadavg_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
