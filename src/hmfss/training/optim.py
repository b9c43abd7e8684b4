"""The optimiser of a training run, built from its resolved configuration.

Adam or AdamW over the trainable parameters (the head; the backbone is frozen): one group,
or two when ``decoder_lr`` / ``decoder_weight_decay`` are set (parameters whose name contains
"decoder" form the second; VAT's recipe).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hmfss.errors import HmfssError
from hmfss.heads.recipe import Recipe
from hmfss.training.config import TrainConfig

OPTIMIZER_KINDS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser of ``cfg``, which :func:`~hmfss.training.config.resolve` has filled in."""
    if cfg.optimizer is None or cfg.lr is None or cfg.weight_decay is None:
        raise ValueError("build_optimizer needs a resolved config (hmfss.training.config.resolve)")
    recipe = Recipe(optimizer=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, decoder_lr=cfg.decoder_lr,
                    decoder_weight_decay=cfg.decoder_weight_decay)
    groups = [g for g in recipe.param_groups(model) if g["params"]]
    if not groups:
        raise HmfssError(f"{cfg.arch} has no trainable parameters")
    return OPTIMIZER_KINDS[cfg.optimizer](groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def describe_optimizer(optimizer: torch.optim.Optimizer) -> str:
    """e.g. "AdamW, 2 groups: 1,234 params lr 0.0005 wd 0 | 567 params lr 0.0005 wd 0"."""
    parts = [f"{sum(p.numel() for p in g['params']):,} params lr {g['lr']:g} wd {g['weight_decay']:g}"
             for g in optimizer.param_groups]
    n = len(parts)
    return f"{type(optimizer).__name__}, {n} group{'s' if n > 1 else ''}: " + " | ".join(parts)


def check_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any], path: Path) -> None:
    """The saved optimizer state must come from the same kind of optimiser with the same groups."""
    kind = state.get("optimizer_kind")
    if kind is not None and kind != type(optimizer).__name__:
        raise HmfssError(f"{path} holds {kind} optimizer state, but the run's config gives "
                         f"{type(optimizer).__name__}; was config.yaml edited?")
    saved = [len(g["params"]) for g in state["optimizer"]["param_groups"]]
    ours = [len(g["params"]) for g in optimizer.param_groups]
    if saved != ours:
        raise HmfssError(f"{path} holds optimizer groups of {saved} parameters, the model has {ours}; "
                         f"was config.yaml edited?")
