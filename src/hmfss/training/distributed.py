"""Distributed-training plumbing for ``torchrun`` launches (no process management here).

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / MASTER_PORT); this module
joins the process group (nccl on GPU, gloo on CPU), shards episode lists across ranks
without duplicates, reduces metric accumulators, gathers per-rank RNG states for
checkpoints and broadcasts a resumed state from rank 0. A plain ``python`` / ``hmfss`` run
is the world of one process and every helper is then a no-op.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from hmfss.errors import HmfssError
from hmfss.inputs import check_device

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise HmfssError(f"environment variable {name}={value!r} is not an integer") from None


def launch_rank() -> int:
    """This process's rank as set by ``torchrun`` (0 when not launched by it)."""
    return _env_int("RANK", 0)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" -> this process's GPU (cuda:LOCAL_RANK) when CUDA is available, else CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(check_device(name))
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1; pick this process's device."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistInfo(0, 1, 0, dev, None)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            raise HmfssError("WORLD_SIZE > 1 but MASTER_ADDR is not set: launch multi-process training with torchrun")
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                device_id=dev if dev.type == "cuda" else None)
    return DistInfo(rank, world, local_rank, dev, backend)


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shard(items: Sequence[T], rank: int, world_size: int, equal: bool = True) -> list[T]:
    """This rank's share of ``items``: every ``world_size``-th item from ``rank`` on.

    ``equal``: drop the last ``len % world_size`` items so that every rank gets the same
    number (training: every rank must take the same number of optimizer steps). Never
    repeats an item, unlike ``DistributedSampler``'s padding.
    """
    items = list(items)
    if equal:
        items = items[: len(items) - len(items) % world_size] if world_size > 1 else items
    return items[rank::world_size]


def all_reduce_sum(arrays: Sequence[np.ndarray], info: DistInfo) -> list[np.ndarray]:
    """Element-wise sums over ranks of float64 numpy arrays (same shapes on every rank)."""
    if not info.enabled:
        return [np.asarray(a) for a in arrays]
    device = info.device if info.backend == "nccl" else torch.device("cpu")
    flat = torch.cat([torch.as_tensor(np.asarray(a, dtype=np.float64)).reshape(-1) for a in arrays]).to(device)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat = flat.cpu().numpy()
    out, start = [], 0
    for a in arrays:
        a = np.asarray(a)
        out.append(flat[start:start + a.size].reshape(a.shape).astype(a.dtype))
        start += a.size
    return out


def reduce_meter(meter, info: DistInfo) -> None:
    """Sum a :class:`~hmfss.evaluation.metrics.SegmentationMeter`'s accumulators over all ranks, in place."""
    names = meter.ACCUMULATORS
    reduced = all_reduce_sum([getattr(meter, n) for n in names], info)
    for name, value in zip(names, reduced):
        setattr(meter, name, value)


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main_rank(work: Callable[[], Any], info: DistInfo) -> Any:
    """``work()`` on rank 0 only (e.g. what touches the run directory); its result, or its
    :class:`HmfssError` raised again, on every rank."""
    error = result = None
    if info.is_main:
        try:
            result = work()
        except HmfssError as exc:
            error = str(exc)
    error, result = broadcast_object((error, result), info)
    if error:
        raise HmfssError(error)
    return result


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is true on at least one."""
    if not info.enabled:
        return flag
    return bool(all_reduce_sum([np.array([1.0 if flag else 0.0])], info)[0][0] > 0)


# ---- RNG states (stored in checkpoints; only tensors and plain containers) ------------------


def rng_state() -> dict[str, Any]:
    """This process's python / numpy / torch (and CUDA) generator states."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed python / numpy from the worker's torch seed.

    PyTorch gives every worker ``base_seed + worker_id`` (base_seed drawn from the loader's
    generator), so each worker, epoch and rank gets its own reproducible stream.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
