"""Imports every algorithm module once, so that their `@register_algorithm` classes are in the registry."""

from __future__ import annotations
