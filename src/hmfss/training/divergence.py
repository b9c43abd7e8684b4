"""Divergence of a training run: a non-finite loss or non-finite weights stop it.

After every optimisation step the loss and the trainable weights are checked. A NaN or an
infinity in either ends the run with :class:`Diverged` (one line; the CLI exits with status 2)
before anything is written, so ``best.pt`` and ``last.pt`` only ever hold finite weights; the
state of the diverged step is dropped. Skipping such steps instead would hide the cause (most
often a learning rate that is too high) behind a run that silently stops learning.
"""

from __future__ import annotations

import math

import torch

from hmfss.errors import HmfssError


class Diverged(HmfssError):
    """The loss or the weights of a training run became NaN or infinite."""


def finite_weights(model: torch.nn.Module, trainable_only: bool = True) -> bool:
    """Whether every floating-point parameter (only those that train, by default) is finite."""
    checks = [torch.isfinite(p.detach()).all() for p in model.parameters()
              if p.is_floating_point() and (p.requires_grad or not trainable_only)]
    return bool(torch.stack(checks).all()) if checks else True


def step_problem(loss: float, model: torch.nn.Module) -> str | None:
    """What is non-finite after a step ("the loss is nan", "a weight is NaN or infinite"), or None."""
    if not math.isfinite(loss):
        return f"the loss is {loss}"
    if not finite_weights(model):
        return "a weight became NaN or infinite"
    return None


def diverged_message(problem: str, epoch: int, step: int, lr: float) -> str:
    """The one-line error of a diverged run (``epoch``: 1-based; ``step``: inside the epoch)."""
    return (f"training diverged at epoch {epoch} step {step}: {problem} (lr {lr:g}); the run stopped and no "
            f"checkpoint holds these weights; start a new run with a lower --lr")
