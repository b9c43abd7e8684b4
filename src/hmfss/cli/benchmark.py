"""``hmfss benchmark``: seconds per episode (or per training step with ``--train``), throughput,
memory and FLOPs on random inputs."""

from __future__ import annotations

import argparse

from hmfss.cli.predict import add_selection_argument

MAX_BATCH = 1024  # episodes per timed step


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="measure speed, memory and FLOPs (random weights, no checkpoint needed)",
        description="Measure seconds per episode, episodes/s, queries/s with a fixed support set, "
        "peak memory, parameters and FLOPs of a model on random inputs; with --train, the same for "
        "the training step (forward, loss, backward, optimiser step).",
    )
    p.add_argument("--train", action="store_true",
                   help="time the training step on a batch of random 1-shot episodes instead of inference")
    p.add_argument("--arch", default="hsnet")
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--masking", default="hm")
    p.add_argument("--nshot", type=int, default=1)
    p.add_argument("--img-size", type=int, default=400)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (reports mask agreement with fp32)")
    p.add_argument("--batch", type=int, default=None,
                   help="episodes (and stream queries) per forward (default 1; with --train 4)")
    p.add_argument("--compile", action="store_true", help="torch.compile the head (inference and --train)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="also time the episode and the fixed-support stream replayed from CUDA graphs "
                   "(recorded once per input shape; needs --device cuda)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs after warm-up (default 5)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--stream-queries", type=int, default=None,
                   help="queries in the fixed-support stream (default 8; inference only)")
    p.add_argument("--no-naive", action="store_true", help="skip timing the K-separate-forwards path (inference only)")
    add_selection_argument(p)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--benchmark", dest="benchmark_name", default=None, help="VAT configuration (pascal/coco/fss)")
    p.add_argument("--json", default=None, help="write all figures to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    import torch

    from hmfss.capability import bf16_warning
    from hmfss.errors import HmfssError
    from hmfss.inputs import MAX_THREADS, check_at_most, check_device, check_img_size, check_min, check_output_file
    from hmfss.training.distributed import resolve_device

    if args.train:
        _refuse_inference_options(args)
    if args.batch is None:
        args.batch = 4 if args.train else 1
    if args.stream_queries is None:
        args.stream_queries = 8
    for name in ("nshot", "batch", "repeats", "stream_queries"):
        check_min(getattr(args, name), f"--{name.replace('_', '-')}")
    check_min(args.warmup, "--warmup", 0)
    check_min(args.threads, "--threads", 1)
    check_at_most(args.threads, "--threads", MAX_THREADS)
    check_at_most(args.batch, "--batch", MAX_BATCH, " (random episodes held in memory at once)")
    check_img_size(args.img_size, "--img-size")
    check_device(args.device)
    check_output_file(args.json, "--json")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.cuda_graph and (args.train or device.type != "cuda"):
        raise HmfssError("--cuda-graph times inference on a CUDA device: it needs --device cuda and no --train"
                         f" (got --device {args.device}{', --train' if args.train else ''})")
    if args.amp and bf16_warning(device):
        print(f"note: {bf16_warning(device)}", file=sys.stderr, flush=True)
    result, table = (_train_benchmark if args.train else _inference_benchmark)(args, device)
    print(table)
    if args.json:
        _write_json(args.json, result)
    return 0


def _refuse_inference_options(args: argparse.Namespace) -> None:
    """--train times 1-shot training steps: options of the inference benchmark are an error
    there, not silently ignored."""
    from hmfss.errors import HmfssError

    if args.nshot != 1:
        raise HmfssError(f"--train times 1-shot training episodes; --nshot must be 1, got {args.nshot}")
    given = [flag for flag, value in (("--stream-queries", args.stream_queries is not None),
                                      ("--no-naive", args.no_naive), ("--fast-selection", args.fast_selection))
             if value]
    if given:
        raise HmfssError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to inference only, "
                         "not with --train")


def _options(args: argparse.Namespace) -> dict:
    return {"benchmark": args.benchmark_name} if args.benchmark_name else {}


def _inference_benchmark(args: argparse.Namespace, device) -> tuple[dict, str]:
    from hmfss.evaluation.benchmark import BenchmarkConfig, format_table, run_benchmark

    cfg = BenchmarkConfig(
        arch=args.arch, backbone=args.backbone, masking=args.masking, nshot=args.nshot,
        img_size=args.img_size, device=str(device), amp=args.amp, batch=args.batch,
        compile=args.compile, repeats=args.repeats, warmup=args.warmup,
        stream_queries=args.stream_queries, naive=not args.no_naive,
        exact_selection=not args.fast_selection, cuda_graph=args.cuda_graph, options=_options(args),
    )
    result = run_benchmark(cfg)
    return result, format_table(result)


def _train_benchmark(args: argparse.Namespace, device) -> tuple[dict, str]:
    from hmfss.training.benchmark import TrainBenchmarkConfig, format_train_table, run_train_benchmark

    cfg = TrainBenchmarkConfig(
        arch=args.arch, backbone=args.backbone, masking=args.masking, img_size=args.img_size,
        batch=args.batch, device=str(device), amp=args.amp, compile=args.compile, repeats=args.repeats,
        warmup=args.warmup, options=_options(args),
    )
    result = run_train_benchmark(cfg)
    return result, format_train_table(result)


def _write_json(path: str, result: dict) -> None:
    import json
    from pathlib import Path

    from hmfss.atomic import atomic_write_text, remove_stale_temps

    remove_stale_temps(Path(path).parent)
    atomic_write_text(Path(path), json.dumps(result, indent=2))
    print(f"wrote {path}")
