"""Algorithms as registered, small classes; the run driver (`s2r.policies.driver`) does everything around them.

An algorithm says how to do one iteration of its work (`iterate`), what its state is (`state_dict`) and how
to export what it learned (`export`); its constructor refuses a task that does not suit it (the driver then
leaves no run folder behind). It never opens a progress bar, a TensorBoard writer, a checkpoint file or a
signal handler: the driver owns the run folder, the budget, Ctrl-C, atomic checkpoints, resume, the final
export and the learning-curve plot, the same for all of them.

    @register_algorithm
    class MyAlgo(Algorithm):
        algo_id = "my-algo"
        config_cls = MyAlgoConfig
        def __init__(self, ctx: RunContext) -> None: ...
        def iterate(self) -> dict[str, float]: ...

`s2r train <task> --algo <id>` looks the id up here; an unknown id fails with the close names.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from s2r.policies.rundir import RunDir


class UnknownAlgorithmError(KeyError):
    """An algorithm id that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; we want a plain sentence.
        return str(self.args[0])


class AlgorithmTaskMismatch(ValueError):
    """The task does not fit the algorithm (PPO on a one-step bandit, BC with no demos, images on a vector learner)."""


@dataclass(frozen=True, kw_only=True)
class RunContext:
    """What the driver hands an algorithm when it builds it.

    Attributes:
        task_id: Registered task id (or `gym:<id>` for a gymnasium env).
        task_cfg: The task's frozen config, overrides applied.
        cfg: The algorithm's frozen config (an instance of its `config_cls`).
        run: The run folder (already created).
        seed: Seed for envs, torch and sampling.
        resume: True when continuing a run (the driver loads the checkpoint, if any, after construction).
        progress: Whether a progress bar is shown (an algorithm with inner loops may show its own detail).
        total: The step budget in the algorithm's unit when one is set (an iteration may stop short of it).
        dist: This process's place in a data-parallel group (`s2r.policies.distributed.DistInfo`), or None.
            Only algorithms with `data_parallel = True` are built with one.
    """

    task_id: str
    task_cfg: Any
    cfg: Any
    run: RunDir
    seed: int = 0
    resume: bool = False
    progress: bool = True
    total: int | None = None
    dist: Any = None


class Algorithm(ABC):
    """One learning method, as the run driver sees it.

    Class attributes:
        algo_id: The registry id (`--algo`).
        config_cls: Its frozen dataclass config (`--train-set key=value` overrides it, typos named).
        unit: What `--steps` counts and the progress bar shows ("env steps", "updates", "rounds").
        default_steps: Budget in `unit` when neither --steps nor --minutes is given.
        checkpoint_every: Units between checkpoints (0: only on time and at the end); an instance may set its own
            from its config.
        curve: (history key, title) pairs plotted in learning_curve.png against wall clock.
        postfix: (history key, short label) pairs shown on the progress bar.
        durable_replay: The run keeps transitions in `replay/` as they arrive; a run killed before its first
            checkpoint restarts its learner from the config and keeps them.
        description: One line for `s2r algos`.
        data_parallel: It can run as one rank of a torch.distributed group (`RunContext.dist`): its update
            averages gradients over ranks and its `progress` counts every rank's steps.
    """

    algo_id: ClassVar[str]
    config_cls: ClassVar[type]
    unit: ClassVar[str] = "env steps"
    default_steps: int = 1_000_000
    curve: ClassVar[tuple[tuple[str, str], ...]] = (("mean_return", "mean episode return"),)
    postfix: ClassVar[tuple[tuple[str, str], ...]] = (("mean_return", "ret"),)
    durable_replay: ClassVar[bool] = False
    description: ClassVar[str] = ""
    data_parallel: ClassVar[bool] = False

    checkpoint_every: int = 0
    #: Units of work done so far (the driver reads it after each `iterate` and restores it on resume).
    progress: int = 0

    @classmethod
    def config_for(cls, cfg: Any, num_envs: int | None, seed: int | None) -> Any:
        """Apply the CLI's --num-envs / --seed to the algorithm config (fields of that name, when it has them)."""
        from dataclasses import fields, replace

        names = {f.name for f in fields(cfg)}
        kw = {k: v for k, v in (("num_envs", num_envs), ("seed", seed)) if v is not None and k in names}
        return replace(cfg, **kw) if kw else cfg

    @abstractmethod
    def __init__(self, ctx: RunContext) -> None:
        """Build envs, networks and storage. Refuse bad input here, before the first step."""

    @abstractmethod
    def iterate(self) -> dict[str, float]:
        """Do one iteration (collect + update, or one round) and advance `self.progress`; returns statistics."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue (networks, optimisers, counters; not the replay on disk)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`."""

    @abstractmethod
    def export(self) -> dict[str, Any]:
        """Write policy.onnx + policy.json into the run folder (parity-checked); returns the parity figures."""

    def sync(self) -> None:
        """Make data written so far durable before a checkpoint names it (e.g. fsync a replay buffer)."""

    def on_resume(self) -> str:
        """After a resume, one line saying what was recovered (e.g. transitions already on disk)."""
        return ""

    def plot(self, history: list[dict[str, Any]], path: Any) -> bool:
        """Draw a custom learning_curve.png at `path` from the history rows; False: the driver draws `curve`."""
        return False

    def final_stats(self) -> dict[str, float]:
        """Statistics to log once at the end (e.g. a final evaluation); {} to skip."""
        return {}

    def close(self) -> None:
        """Release envs and files."""


def require_vector_groups(algo_id: str, task_id: str, spec: Any, groups: tuple[str, ...]) -> None:
    """Refuse, in one sentence, a group the task lacks or an image group among those a vector learner reads.

    Args:
        algo_id: The algorithm (named in the message).
        task_id: The task (named in the message).
        spec: The task's `EnvSpec` (its `groups`).
        groups: The groups the actor and critic read.
    """
    have = spec.groups
    for g in dict.fromkeys(groups):
        if g not in have:
            raise AlgorithmTaskMismatch(f"task '{task_id}' has no observation group '{g}' (it has "
                                        f"{', '.join(sorted(have))}); set the actor/critic groups to those")
        if have[g].is_image:
            raise AlgorithmTaskMismatch(f"{algo_id} reads observation group '{g}' of task '{task_id}', which holds images "
                                        f"{tuple(have[g].shape)}; it learns from vector groups only: drop '{g}' from the "
                                        "actor/critic groups")


def refuse_image_encoder(algo_id: str, learner_cfg: Any) -> None:
    """Refuse `learner.encoder.image_groups` in an algorithm whose loop does not carry images yet (sac/td3/hil do)."""
    groups = getattr(getattr(learner_cfg, "encoder", None), "image_groups", ())
    if groups:
        raise AlgorithmTaskMismatch(f"{algo_id} learns from vector groups only for now; learner.encoder.image_groups "
                                    f"{list(groups)} is read by sac, td3 and hil: drop it, or train with --algo hil")


_ALGORITHMS: dict[str, type[Algorithm]] = {}


def register_algorithm(cls: type[Algorithm]) -> type[Algorithm]:
    """Class decorator: register under `cls.algo_id`; a taken id is an error."""
    if cls.algo_id in _ALGORITHMS:
        raise ValueError(f"algorithm '{cls.algo_id}' is already registered (by {_ALGORITHMS[cls.algo_id].__qualname__})")
    _ALGORITHMS[cls.algo_id] = cls
    return cls


def algorithm_ids() -> list[str]:
    """Registered ids (known to the lazy table or registered by an imported module), sorted."""
    from s2r.policies.algorithms import MODULES

    return sorted(set(MODULES) | set(_ALGORITHMS))


def get_algorithm(algo_id: str) -> type[Algorithm]:
    """Look an id up (importing its module on first use); an unknown id raises with the closest names."""
    import importlib

    from s2r.policies.algorithms import MODULES

    if algo_id not in _ALGORITHMS and algo_id in MODULES:
        importlib.import_module(MODULES[algo_id])
    try:
        return _ALGORITHMS[algo_id]
    except KeyError:
        if algo_id in MODULES:
            raise RuntimeError(f"{MODULES[algo_id]} does not register algorithm '{algo_id}'; fix "
                               "s2r.policies.algorithms.MODULES") from None
        known = algorithm_ids()
        close = difflib.get_close_matches(algo_id, known, n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownAlgorithmError(f"unknown algorithm '{algo_id}'.{hint} Known: {', '.join(known)}.") from None
