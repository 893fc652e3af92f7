"""Where each registered algorithm lives: id -> module, imported on first use.

Importing every algorithm up front would make each `s2r train` pay for all of them (mfrl's BoTorch alone
costs seconds), so the registry imports only the module of the id asked for; that module's
`@register_algorithm` class then fills the registry. A test walks this table.
"""

from __future__ import annotations

MODULES: dict[str, str] = {
    "ppo": "s2r.policies.ppo",
    "ppo-teacher": "s2r.policies.teacher",
    "distill": "s2r.policies.distill",
    "ppo-privileged": "s2r.policies.curriculum",
    "sac-privileged": "s2r.policies.curriculum",
    "bc": "s2r.policies.bc",
    "residual": "s2r.policies.residual",
    "finetune": "s2r.policies.residual",
    "mfrl": "s2r.policies.mfrl",
    "sac": "s2r.policies.sac",
    "td3": "s2r.policies.sac",
    "hil": "s2r.policies.hil",
}
