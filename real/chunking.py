"""Running an action-chunking policy step by step (numpy only, robot side and sim side alike).

A chunking policy predicts the next `k` actions at every step. Temporal ensembling averages, for the
current step, the predictions that the last `k` chunks made for it. The exported graph does the averaging
itself; what it needs from the caller is its own past outputs. This module keeps them:

    graph inputs:  obs (B, obs_dim), past_chunks (B, k-1, k, A), past_mask (B, k-1)
    graph outputs: actions (B, A), chunk (B, k, A)

`past_chunks[:, j]` is the chunk emitted `j + 1` steps ago and `past_mask[:, j]` is 1 where it exists (0
after a reset). After each call, `push(chunk)` shifts the history. policy.json records this in its
`chunking` section (size, ensemble weight, input and output names; `s2r.real.metadata.ChunkingSection`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

STATE_INPUT = "past_chunks"
MASK_INPUT = "past_mask"
STATE_OUTPUT = "chunk"


class ChunkHistory:
    """The last `k - 1` chunks of `num_envs` policies running in lockstep."""

    def __init__(self, num_envs: int, chunk: int, action_dim: int) -> None:
        if chunk < 1:
            raise ValueError(f"chunk size must be at least 1, got {chunk}")
        self.chunk = chunk
        self.past = np.zeros((num_envs, max(chunk - 1, 1), chunk, action_dim), dtype=np.float32)
        self.mask = np.zeros((num_envs, max(chunk - 1, 1)), dtype=np.float32)

    def feed(self) -> dict[str, np.ndarray]:
        """The graph's state inputs for the current step."""
        return {STATE_INPUT: self.past, MASK_INPUT: self.mask}

    def push(self, chunk: np.ndarray) -> None:
        """Record the chunk (num_envs, k, A) just emitted; the oldest one falls out."""
        if self.chunk == 1:
            return
        self.past = np.concatenate([chunk[:, None].astype(np.float32), self.past[:, :-1]], axis=1)
        self.mask = np.concatenate([np.ones_like(self.mask[:, :1]), self.mask[:, :-1]], axis=1)

    def reset(self, env_ids: Any = None) -> None:
        """Forget the history of the given envs (all when None), e.g. after an episode ends."""
        ids = slice(None) if env_ids is None else env_ids
        self.past[ids] = 0.0
        self.mask[ids] = 0.0


def ensemble_weights(chunk: int, m: float) -> np.ndarray:
    """Weight of the prediction made `age` steps ago, age = 0..k-1: exp(m * age), older counts more.

    Favouring older predictions (as ACT does) keeps the executed action smooth when a new chunk jumps.
    """
    return np.exp(m * np.arange(chunk, dtype=np.float64)).astype(np.float32)
