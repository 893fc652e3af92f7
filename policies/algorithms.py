"""Imports every algorithm module once, so that their `@register_algorithm` classes are in the registry."""

from __future__ import annotations

import s2r.policies.sac  # noqa: F401
