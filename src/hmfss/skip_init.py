"""Building a model without its random initialisation, for a load that overwrites every weight.

``load_model`` builds the model a checkpoint describes and then strictly loads every parameter
and persistent buffer, so the random values drawn at construction are never used (drawing
them is a large share of a load: docs/performance.md). Inside :func:`random_init_skipped`
``torch.nn.init``'s random fills leave the tensor as allocated, in the calling thread only:
other threads building models meanwhile get their usual initialisation.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Callable, Iterator

import torch

RANDOM_FILLS = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                "xavier_uniform_", "xavier_normal_", "orthogonal_")
_patching = threading.RLock()  # re-entered by a nested use in the same thread


def _skipped_in(thread: int, fill: Callable) -> Callable:
    @functools.wraps(fill)
    def wrapper(tensor, *args, **kwargs):
        if threading.get_ident() == thread:
            return tensor
        return fill(tensor, *args, **kwargs)
    return wrapper


@contextlib.contextmanager
def random_init_skipped() -> Iterator[None]:
    """Within: ``torch.nn.init``'s random fills are no-ops in this thread (the tensors keep
    whatever memory they were given). Only for models whose every parameter and persistent
    buffer is loaded strictly before use."""
    with _patching:
        originals = {name: getattr(torch.nn.init, name) for name in RANDOM_FILLS}
        me = threading.get_ident()
        for name, fill in originals.items():
            setattr(torch.nn.init, name, _skipped_in(me, fill))
        try:
            yield
        finally:
            for name, fill in originals.items():
                setattr(torch.nn.init, name, fill)
