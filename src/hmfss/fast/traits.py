"""Which fast inputs a head accepts: a small registry that heads fill in, read by the CPU path.

Heads sit above this package; a head that can take a faster memory layout or do without a
step of its own declares it here with :func:`accepts_fast_inputs`, so that the generic head
interface carries no speed settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

from torch import nn


@dataclass(frozen=True)
class FastInputs:
    """What the CPU path may hand a head instead of the reference inputs."""

    channels_last_maps: bool = False  # backbone maps in channels-last memory (same values)
    query_major_corr: bool = False  # correlation levels in query-major memory (fast/correlation.py)
    plain_support_masking: bool = False  # support_features is the plain masking: the path may mask in place


NONE = FastInputs()
_REGISTRY: dict[type, FastInputs] = {}
H = TypeVar("H", bound=type)


def accepts_fast_inputs(**inputs: bool) -> Callable[[H], H]:
    """Class decorator: the head class (and its subclasses) accepts these :class:`FastInputs`."""
    declared = FastInputs(**inputs)

    def register(cls: H) -> H:
        _REGISTRY[cls] = declared
        return cls

    return register


def fast_inputs(head: nn.Module) -> FastInputs:
    """The :class:`FastInputs` declared for ``head``'s class (a ``torch.compile`` wrapper is
    looked through); nothing for a head that declared none."""
    head = getattr(head, "_orig_mod", head)
    for cls in type(head).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return NONE
