"""Where the PPO training loop used to live; it is now `s2r.policies.ppo.PPOTrainer` on the one run driver.

Kept so that imports of the old names keep working; new code imports from `s2r.policies.driver` and
`s2r.policies.ppo`.
"""

from __future__ import annotations

from s2r.policies.driver import CheckpointError, load_checkpoint, save_atomic
from s2r.policies.ppo import TrainConfig, export_checkpoint, export_model

CHECKPOINT = "checkpoint.pt"

__all__ = ["CHECKPOINT", "CheckpointError", "TrainConfig", "export_checkpoint", "export_model", "load_checkpoint",
           "save_atomic"]
