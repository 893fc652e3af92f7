"""The algorithm registry: every id in the lazy table registers itself with a typed config; mistakes fail loudly."""

from __future__ import annotations

import dataclasses

import pytest
from s2r.policies.algorithm import Algorithm, UnknownAlgorithmError, algorithm_ids, get_algorithm, register_algorithm
from s2r.policies.algorithms import MODULES


@pytest.mark.parametrize("algo_id", sorted(MODULES))
def test_every_listed_algorithm_registers_with_a_frozen_typed_config(algo_id: str) -> None:
    cls = get_algorithm(algo_id)
    assert issubclass(cls, Algorithm) and cls.algo_id == algo_id and cls.description
    assert dataclasses.is_dataclass(cls.config_cls)
    cfg = cls.config_cls()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]
    assert cls.unit in ("env steps", "updates", "rounds")


def test_unknown_and_duplicate_ids_fail_loudly() -> None:
    with pytest.raises(UnknownAlgorithmError, match=r"unknown algorithm 'resdual'\. Did you mean: residual"):
        get_algorithm("resdual")
    assert "ppo" in algorithm_ids() and "mfrl" in algorithm_ids()
    with pytest.raises(ValueError, match="already registered"):
        register_algorithm(type("Again", (get_algorithm("ppo"),), {}))
