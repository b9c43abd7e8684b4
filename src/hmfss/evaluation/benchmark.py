"""Speed measurement of a model on random inputs (no checkpoint needed).

Measures, after warm-up: seconds per K-shot episode (``predict_mask``: one batched backbone
pass, query features once), the same episode the straightforward way (K independent 1-shot
forwards + vote, as the original code does), queries/s with a fixed support set (encode once,
segment many), peak memory, learnable parameters, FLOPs per episode and the achieved FLOP
rate against the machine's measured matmul rate.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from hmfss.capability import bf16_is_native
from hmfss.evaluation.timing import (count_flops, device_name, matmul_peak, peak_memory, repeat_timings,
                                     reset_peak_memory, summarise, synchronizer, table_text)
from hmfss.fast.graphs import Recorder, cuda_graphed
from hmfss.model import FewShotSegmenter, build_model, learnable_parameters, vote


@dataclass
class TimedModel:
    """What any speed measurement fixes: the model, its input size and batch, device, precision,
    compilation, timed repeats after warm-up, the seed of weights and inputs."""

    arch: str = "hsnet"
    backbone: str = "resnet50"
    masking: str = "hm"
    img_size: int = 400
    batch: int = 1
    device: str = "cpu"
    amp: bool = False
    compile: bool = False
    repeats: int = 5
    warmup: int = 1
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # head-specific (e.g. VAT benchmark)


@dataclass
class BenchmarkConfig(TimedModel):
    nshot: int = 1
    stream_queries: int = 8
    naive: bool = True  # also time the straightforward K-forward path
    exact_selection: bool = True  # see hmfss.fast.path.FastPath; False: HM's support pass channels-last too
    cuda_graph: bool = False  # also time the episode and the stream replayed from CUDA graphs


def bf16_autocast(device: torch.device, enabled: bool, cache: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``enabled`` (``--amp``), else nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)


def naive_predict(model: FewShotSegmenter, query, supports, masks):
    """The original K-shot routine: K independent 1-shot forwards, argmax, vote."""
    shots = [model(query, supports[:, k], masks[:, k]).argmax(dim=1) for k in range(masks.shape[1])]
    return vote(torch.stack(shots, dim=1))


def random_episode(cfg: BenchmarkConfig, device: torch.device):
    """Random images and a centred disc mask of radius side/4 (at least 1 pixel, so that the
    smallest images keep a foreground pixel)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    b, k, s = cfg.batch, cfg.nshot, cfg.img_size
    query = torch.randn(b, 3, s, s, generator=gen)
    supports = torch.randn(b, k, 3, s, s, generator=gen)
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    masks = ((yy - s / 2) ** 2 + (xx - s / 2) ** 2 <= max(s / 4, 1) ** 2).float().expand(b, k, s, s).contiguous()
    return query.to(device), supports.to(device), masks.to(device)


def run_benchmark(cfg: BenchmarkConfig, model: FewShotSegmenter | None = None,
                  recorder: Recorder | None = None) -> dict[str, Any]:
    """Run every measurement; returns a JSON-serialisable dict (``recorder``: see
    :func:`hmfss.fast.graphs.cuda_graphed`, for ``cfg.cuda_graph``)."""
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    if model is None:
        model = build_model(cfg.arch, cfg.backbone, cfg.masking, img_size=cfg.img_size, **cfg.options)
    model = model.to(device).eval()
    model.exact_selection = cfg.exact_selection
    query, supports, masks = random_episode(cfg, device)
    sync = synchronizer(device)
    amp = bf16_autocast(device, cfg.amp)
    predict = model.predict_mask
    if cfg.compile:
        model.head.compile()  # in place: the head's class and parameter names stay
    reset_peak_memory(device)

    def episode():
        with torch.inference_mode(), amp:
            return predict(query, supports, masks)

    def naive():
        with torch.inference_mode(), amp:
            return naive_predict(model, query, supports, masks)

    with torch.inference_mode():
        state = model.encode_support(supports[:1], masks[:1])
    stream_batch = torch.randn(cfg.stream_queries, 3, cfg.img_size, cfg.img_size, device=device)

    def stream():
        with torch.inference_mode(), amp:
            for i in range(0, cfg.stream_queries, cfg.batch):
                model.segment(stream_batch[i:i + cfg.batch], state)

    result: dict[str, Any] = {"config": asdict(cfg), "device_name": device_name(device)}
    result["threads"] = torch.get_num_threads()
    result["bf16_native"] = bf16_is_native(device)
    result["learnable_parameters"] = learnable_parameters(model)
    with torch.inference_mode():
        flops = count_flops(lambda: predict(query, supports, masks))
    result["gflops_per_episode"] = flops / cfg.batch / 1e9
    ep = summarise(repeat_timings(episode, cfg.repeats, cfg.warmup, sync))
    ep = {k: v / cfg.batch for k, v in ep.items()}  # per episode
    result["episode"] = ep
    result["episodes_per_s"] = 1.0 / ep["median_s"]
    result["achieved_gflops_per_s"] = result["gflops_per_episode"] / ep["median_s"]
    if cfg.naive:
        nv = {k: v / cfg.batch for k, v in summarise(repeat_timings(naive, cfg.repeats, cfg.warmup, sync)).items()}
        result["naive_episode"] = nv
        with torch.inference_mode():
            result["naive_masks_equal"] = bool(torch.equal(episode(), naive()))
    st = summarise(repeat_timings(stream, max(2, cfg.repeats // 2), 1, sync))
    result["stream"] = {"queries": cfg.stream_queries, **st}
    result["stream_queries_per_s"] = cfg.stream_queries / st["median_s"]
    if cfg.cuda_graph:
        result.update(graph_timings(model, cfg, (query, supports, masks), episode(), state, recorder))
    if cfg.amp or not cfg.exact_selection:  # against fp32 with exact selection
        model.exact_selection = True
        with torch.inference_mode():
            reference = model.predict_mask(query, supports, masks)
        model.exact_selection = cfg.exact_selection
        agreement = float((episode() == reference).float().mean())
        result["amp_mask_agreement" if cfg.amp else "fast_selection_mask_agreement"] = agreement
    result.update(peak_memory(device))
    result["matmul_peak_gflops_per_s"] = matmul_peak(device, torch.bfloat16 if cfg.amp else torch.float32)
    result["fraction_of_matmul_peak"] = result["achieved_gflops_per_s"] / result["matmul_peak_gflops_per_s"]
    return result


def graph_timings(model: FewShotSegmenter, cfg: BenchmarkConfig, episode: tuple[torch.Tensor, ...],
                  eager_masks: torch.Tensor, state, recorder: Recorder | None) -> dict[str, Any]:
    """The episode and the fixed-support stream replayed from recorded graphs: seconds per
    episode, queries/s, and whether the replayed masks equal the eager ones."""
    device = episode[0].device
    sync = synchronizer(device)

    def predict(query, supports, masks):  # autocast's weight cache would outlive the recording
        with bf16_autocast(device, cfg.amp, cache=False):
            return model.predict_mask(query, supports, masks)

    def segment(queries):
        with bf16_autocast(device, cfg.amp, cache=False):
            return model.segment(queries, state)

    graphed = cuda_graphed(predict, *episode, recorder=recorder)
    times = summarise(repeat_timings(lambda: graphed(*episode), cfg.repeats, cfg.warmup, sync))
    out = {"graph_episode": {k: v / cfg.batch for k, v in times.items()},
           "graph_masks_equal": bool(torch.equal(graphed(*episode), eager_masks))}
    queries = torch.randn(cfg.batch, 3, cfg.img_size, cfg.img_size, device=device)
    graphed_segment = cuda_graphed(segment, queries, recorder=recorder)
    per_batch = summarise(repeat_timings(lambda: graphed_segment(queries), cfg.repeats, cfg.warmup, sync))
    out["graph_stream_queries_per_s"] = cfg.batch / per_batch["median_s"]
    with torch.inference_mode():
        out["graph_stream_masks_equal"] = bool(torch.equal(graphed_segment(queries), segment(queries)))
    return out


def format_table(result: dict[str, Any]) -> str:
    """A compact human-readable table of :func:`run_benchmark`'s result."""
    cfg = result["config"]
    rows = [
        ("model", f"{cfg['arch']}-{cfg['masking']} / {cfg['backbone']} @ {cfg['img_size']}, {cfg['nshot']}-shot, batch {cfg['batch']}"),
        ("device", f"{result['device_name']}{' bf16 autocast' if cfg['amp'] else ' fp32'}"
                   f"{'' if cfg['exact_selection'] else ', fast selection'}"),
        ("learnable parameters", f"{result['learnable_parameters']:,}"),
        ("GFLOPs / episode", f"{result['gflops_per_episode']:.1f}"),
        ("s / episode (median)", f"{result['episode']['median_s']:.4f}  (min {result['episode']['min_s']:.4f}, max {result['episode']['max_s']:.4f})"),
        ("episodes / s", f"{result['episodes_per_s']:.3f}"),
    ]
    if "naive_episode" in result:
        ratio = result["episode"]["median_s"] / result["naive_episode"]["median_s"]
        rows.append(("s / episode, K separate forwards", f"{result['naive_episode']['median_s']:.4f}  (fast path = {ratio:.2f}x, masks equal: {result['naive_masks_equal']})"))
    if "graph_episode" in result:
        rows.append(("s / episode, CUDA graph", f"{result['graph_episode']['median_s']:.4f}  (min {result['graph_episode']['min_s']:.4f}; masks equal eager: {result['graph_masks_equal']})"))
    rows += [
        ("queries / s, fixed support", f"{result['stream_queries_per_s']:.3f}"),
        *([("queries / s, fixed support, CUDA graph", f"{result['graph_stream_queries_per_s']:.3f}  (masks equal eager: {result['graph_stream_masks_equal']})")]
          if "graph_stream_queries_per_s" in result else []),
        ("achieved GFLOP/s", f"{result['achieved_gflops_per_s']:.1f}  ({100 * result['fraction_of_matmul_peak']:.0f}% of matmul {result['matmul_peak_gflops_per_s']:.1f})"),
        ("peak memory (MB)", f"{result['peak_memory_mb']:.0f}  ({result['peak_memory_kind']})"),
    ]
    if "amp_mask_agreement" in result:
        rows.append(("bf16 vs fp32 mask agreement", f"{100 * result['amp_mask_agreement']:.2f}% of pixels"))
    if "fast_selection_mask_agreement" in result:
        rows.append(("fast vs exact selection, masks", f"{100 * result['fast_selection_mask_agreement']:.2f}% of pixels"))
    return table_text(rows, result)
