"""torch.compile with a way back: a compiled function that falls back to eager if compiling it fails.

torch.compile returns at once; the compiler runs at the first call, so a machine without a C++ compiler or an
op the compiler cannot handle only shows there, in the middle of training. The off-policy learner wraps its
compiled losses in `CompiledOrEager` so `compile=True` is safe to switch on anywhere.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any


def warn_eager(exc: Exception) -> None:
    """The one warning for a learner that could not compile and runs eagerly."""
    warnings.warn(f"torch.compile failed ({exc!r}); the off-policy learner runs eagerly", stacklevel=4)


class CompiledOrEager:
    """A compiled loss that hands over to its eager twin (for good, warning once) if its first call fails.

    After one successful call an exception is the caller's (bad data, a NaN check), not the compiler's: it is
    raised as it is. `learner.compiled` turns False once either loss has fallen back.
    """

    def __init__(self, compiled: Callable, eager: Callable, learner: Any) -> None:
        self.compiled: Callable | None = compiled
        self.eager = eager
        self.learner = learner
        self.worked = False

    def __call__(self, *args: object, **kwargs: object) -> object:
        if self.compiled is not None:
            try:
                out = self.compiled(*args, **kwargs)
            except Exception as exc:
                if self.worked:
                    raise
                warn_eager(exc)
                self.compiled = None
                self.learner.compiled = False
            else:
                self.worked = True
                return out
        return self.eager(*args, **kwargs)
