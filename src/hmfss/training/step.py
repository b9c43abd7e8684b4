"""One optimisation step of episodic training: 1-shot episodes, 2-class cross-entropy.

Shared by the trainer and by anything that must time a training step the way training runs
it (the demo's speed check).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from hmfss.training.distributed import DistInfo
from hmfss.training.precision import autocast


@dataclass
class StepParts:
    """What one step needs. ``net`` runs the forward pass (the model itself, or its DDP or
    compiled wrapper); ``model`` is the plain model whose trainable parameters are stepped."""

    net: nn.Module
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    amp: bool = False
    distributed: bool = False


def forward_module(model: nn.Module, info: DistInfo, compile: bool = False,
                   find_unused_parameters: bool = False) -> nn.Module:
    """The module that runs a training step's forward pass: ``model``, under DDP when ``info``
    is distributed, with its head compiled in place on request (``nn.Module.compile``: the
    parameter names, and so the checkpoints, stay). The frozen backbone stays eager: it runs
    without autograd, and compiled it would recompile for the input shape of every layer."""
    if compile:
        model.head.compile()
    if not info.enabled:
        return model
    # The frozen backbone's parameters do not require gradients, so DDP's reducer holds only
    # the head's; buffers (frozen BN statistics) are identical and not re-broadcast.
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False,
                                   find_unused_parameters=find_unused_parameters)


def train_step(parts: StepParts, batch: dict[str, Any]) -> tuple[float, Tensor | None]:
    """One step on a collated batch (see :func:`~hmfss.data.dataset.collate_episodes`).

    Returns the loss and the predicted query masks (B, H, W) in {0, 1}, or (0.0, None) for a
    batch left empty by unreadable files. Under DDP an empty batch still joins the gradient
    all-reduce (with a zero loss) so that the other processes do not wait forever.
    """
    parts.optimizer.zero_grad(set_to_none=True)
    if not batch["size"]:
        if parts.distributed:
            loss = sum(p.sum() * 0.0 for p in parts.model.parameters() if p.requires_grad)
            loss.backward()
            parts.optimizer.step()
        return 0.0, None
    device = parts.device
    query = batch["query_img"].to(device, non_blocking=True)
    support = batch["support_imgs"][:, 0].to(device, non_blocking=True)
    mask = batch["support_masks"][:, 0].to(device, non_blocking=True)
    target = batch["query_mask"].to(device, non_blocking=True)
    with autocast(device, parts.amp):
        logits = parts.net(query, support, mask)
    loss = F.cross_entropy(logits.float(), target.long())
    parts.scaler.scale(loss).backward()
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    return float(loss.detach()), logits.detach().argmax(1)
