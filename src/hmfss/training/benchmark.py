"""Speed of the training step on random inputs (no data or checkpoint needed).

Times :func:`hmfss.training.step.train_step` exactly as training runs it (forward of a batch
of 1-shot episodes, 2-class cross-entropy, backward, the head's optimiser step) after warm-up,
and reports seconds per step, episodes/s, peak memory and the FLOPs of forward + backward.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from hmfss.capability import bf16_is_native
from hmfss.evaluation.benchmark import BenchmarkConfig, TimedModel, random_episode
from hmfss.evaluation.timing import (count_flops, device_name, matmul_peak, peak_memory, repeat_timings,
                                     reset_peak_memory, summarise, synchronizer, table_text)
from hmfss.fast.memory import keep_freed_memory
from hmfss.model import FewShotSegmenter, build_model, learnable_parameters
from hmfss.training.distributed import DistInfo
from hmfss.training.optim import OPTIMIZER_KINDS
from hmfss.training.precision import autocast, autocast_dtype, grad_scaler
from hmfss.training.step import StepParts, forward_module, train_step


@dataclass
class TrainBenchmarkConfig(TimedModel):
    batch: int = 4  # 1-shot episodes per step


def random_batch(cfg: TrainBenchmarkConfig) -> dict[str, Any]:
    """A collated batch of ``cfg.batch`` random 1-shot episodes (images N(0, 1), a centred disc
    as support mask and query target), as :func:`hmfss.data.dataset.collate_episodes` gives."""
    episode = BenchmarkConfig(nshot=1, img_size=cfg.img_size, batch=cfg.batch, seed=cfg.seed)
    query, supports, masks = random_episode(episode, torch.device("cpu"))
    return {"size": cfg.batch, "query_img": query, "support_imgs": supports, "support_masks": masks,
            "query_mask": masks[:, 0].long()}


def step_parts(model: FewShotSegmenter, device: torch.device, amp: bool, compile: bool = False) -> StepParts:
    """Model in training mode (frozen backbone in eval mode), the head recipe's optimiser."""
    model.train()
    recipe = model.head.recipe
    optimizer = OPTIMIZER_KINDS[recipe.optimizer](recipe.param_groups(model), lr=recipe.lr,
                                                  weight_decay=recipe.weight_decay)
    net = forward_module(model, DistInfo(device=device), compile)  # as `hmfss train` runs it
    return StepParts(net, model, optimizer, grad_scaler(device, amp), device, amp)


def _amp_agreement(model: FewShotSegmenter, batch: dict[str, Any], device: torch.device) -> float:
    """Share of query pixels whose predicted class is the same under autocast as in fp32."""
    inputs = [batch[k].to(device) for k in ("query_img", "support_imgs", "support_masks")]
    inputs[1], inputs[2] = inputs[1][:, 0], inputs[2][:, 0]
    with torch.no_grad():
        fp32 = model(*inputs).argmax(1)
        with autocast(device, True):
            low = model(*inputs).argmax(1)
    return float((fp32 == low).float().mean())


def run_train_benchmark(cfg: TrainBenchmarkConfig, model: FewShotSegmenter | None = None) -> dict[str, Any]:
    """Time the training step; returns a JSON-serialisable dict."""
    device = torch.device(cfg.device)
    kept = keep_freed_memory() if device.type == "cpu" else False  # as training does
    torch.manual_seed(cfg.seed)
    if model is None:
        model = build_model(cfg.arch, cfg.backbone, cfg.masking, img_size=cfg.img_size, **cfg.options)
    model = model.to(device)
    batch = random_batch(cfg)
    result: dict[str, Any] = {"config": asdict(cfg), "device_name": device_name(device),
                              "threads": torch.get_num_threads(), "bf16_native": bf16_is_native(device),
                              "learnable_parameters": learnable_parameters(model), "freed_memory_kept": kept}
    if cfg.amp:
        result["amp_dtype"] = str(autocast_dtype(device)).replace("torch.", "")
        result["amp_mask_agreement"] = _amp_agreement(model.train(), batch, device)
    parts = step_parts(model, device, cfg.amp, cfg.compile)
    result["first_loss"] = train_step(parts, batch)[0]
    reset_peak_memory(device)
    times = summarise(repeat_timings(lambda: train_step(parts, batch), cfg.repeats, cfg.warmup, synchronizer(device)))
    result["step"] = times
    result["episode"] = {k: v / cfg.batch for k, v in times.items()}
    result["episodes_per_s"] = cfg.batch / times["median_s"]
    result.update(peak_memory(device))
    result["gflops_per_step"] = count_flops(lambda: train_step(parts, batch)) / 1e9
    result["gflops_per_episode"] = result["gflops_per_step"] / cfg.batch
    result["achieved_gflops_per_s"] = result["gflops_per_step"] / times["median_s"]
    peak_dtype = autocast_dtype(device) if cfg.amp else torch.float32
    result["matmul_peak_gflops_per_s"] = matmul_peak(device, peak_dtype)
    result["fraction_of_matmul_peak"] = result["achieved_gflops_per_s"] / result["matmul_peak_gflops_per_s"]
    return result


def format_train_table(result: dict[str, Any]) -> str:
    """A compact human-readable table of :func:`run_train_benchmark`'s result."""
    cfg, step = result["config"], result["step"]
    precision = f"{result['amp_dtype']} autocast" if cfg["amp"] else "fp32"
    rows = [
        ("training step", f"{cfg['arch']}-{cfg['masking']} / {cfg['backbone']} @ {cfg['img_size']}, "
                          f"batch {cfg['batch']} 1-shot episodes{', compiled' if cfg['compile'] else ''}"),
        ("device", f"{result['device_name']} {precision}"),
        ("learnable parameters", f"{result['learnable_parameters']:,}"),
        ("s / step (median)", f"{step['median_s']:.4f}  (min {step['min_s']:.4f}, max {step['max_s']:.4f})"),
        ("episodes / s", f"{result['episodes_per_s']:.3f}"),
        ("GFLOPs / step (fwd + bwd)", f"{result['gflops_per_step']:.1f}  ({result['gflops_per_episode']:.1f} / episode)"),
        ("achieved GFLOP/s", f"{result['achieved_gflops_per_s']:.1f}  ({100 * result['fraction_of_matmul_peak']:.0f}% "
                             f"of matmul {result['matmul_peak_gflops_per_s']:.1f})"),
        ("peak memory (MB)", f"{result['peak_memory_mb']:.0f}  ({result['peak_memory_kind']})"),
    ]
    if "amp_mask_agreement" in result:
        rows.append((f"{result['amp_dtype']} vs fp32 mask agreement", f"{100 * result['amp_mask_agreement']:.2f}% of pixels"))
    return table_text(rows, result)
