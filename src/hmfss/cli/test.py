"""``hmfss test``: evaluate a checkpoint on a few-shot benchmark (mIoU, FB-IoU, breakdowns).

Episodes come from the split lists (``hmfss episodes`` prints the same ones); metrics follow
the original protocol (docs/protocol.md). Prints a compact table; ``--json`` writes every figure.
"""

from __future__ import annotations

import argparse
import sys

from hmfss.cli.episodes import add_benchmark_arguments, resolve_episodes

MAX_TABLE_CLASSES = 20  # longer class lists print only the extremes (the JSON has all)


def register(sub: argparse._SubParsersAction) -> None:
    from hmfss.cli.predict import add_max_pixels_argument, add_model_arguments

    p = sub.add_parser(
        "test",
        help="evaluate a checkpoint on PASCAL-5i, COCO-20i, FSS-1000 or a custom folder",
        description="Evaluate a checkpoint: mIoU and FB-IoU (percent), per-class IoU and mIoU by query "
                    "foreground size (<1%, 1-5%, 5-15%, >15% of the image).",
    )
    add_benchmark_arguments(p, datapath_required=True)
    p.add_argument("--checkpoint", required=True, help="hmfss checkpoint, or an original HSNet/HSNet-HM one")
    add_model_arguments(p)
    p.add_argument("--use-original-imgsize", action="store_true",
                   help="score at each query's original size (logits upsampled straight to it) instead of img-size")
    p.add_argument("--no-ignore-255", dest="ignore_255", action="store_false",
                   help="PASCAL: count 255 boundary pixels as background instead of ignoring them")
    p.add_argument("--json", default=None, metavar="OUT", help="write all figures to this JSON file")
    p.add_argument("--visualize", default=None, metavar="DIR",
                   help="write one image per episode: supports (blue masks), prediction, ground truth (red)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip episodes whose images or masks are missing or unreadable (and report how many)")
    p.add_argument("--bsz", "--batch-size", dest="batch_size", type=int, default=1, help="episodes per batch (default 1)")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes (default 2; episodes do not depend on it)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--strict", action="store_true",
                   help="stop with an error when a query's ground truth is empty or entirely ignored "
                        "(default: score it and report how many in the summary)")
    add_max_pixels_argument(p)
    p.set_defaults(func=run)


def empty_ground_truths(reader, episodes, skip_bad: bool, use_ignore: bool = True) -> list[str]:
    """Query names (one per (query, class) pair) whose ground truth has no object pixel or is
    entirely ignored (``use_ignore``). Such episodes score 0 or nothing whatever the model does."""
    from hmfss.errors import HmfssError

    empty = []
    for name, class_id in dict.fromkeys((ep.query, ep.class_id) for ep in episodes):
        try:
            mask, ignore = reader.labels(name, class_id)
        except HmfssError:
            if skip_bad:
                continue
            raise
        scored = ~ignore if (ignore is not None and use_ignore) else None
        if not (mask[scored] if scored is not None else mask).any():
            empty.append(name)
    return empty


def format_table(result: dict) -> str:
    """Compact text report of a :func:`run` result."""
    proto = result["protocol"]
    res = "original size" if proto["original_imgsize"] else f"{proto['img_size']}x{proto['img_size']}"
    head = (f"{result['benchmark']} {result['split']}"
            + (f" fold {result['fold']}" if result["benchmark"] in ("pascal", "coco") else "")
            + f" | {result['nshot']}-shot | {result['evaluated']} episodes"
            + (f" ({result['skipped']} skipped)" if result["skipped"] else "")
            + f" | protocol {proto['name']} seed {proto['seed']} | {res}")
    lines = [head, f"mIoU {result['miou']:6.2f}   FB-IoU {result['fb_iou']:6.2f}", ""]
    classes = result["per_class"]
    if len(classes) > MAX_TABLE_CLASSES:  # e.g. FSS-1000: the 5 lowest and 5 highest
        ranked = sorted(classes, key=lambda c: (c["iou"], c["name"]))
        shown = ranked[:5] + [None] + ranked[-5:]
    else:
        shown = classes
    width = max([len("class")] + [len(c["name"]) for c in classes])
    lines.append(f"{'class':<{width}}  {'IoU':>6}  {'episodes':>8}")
    for c in shown:
        if c is None:
            lines.append(f"{'...':<{width}}  ({len(classes) - 10} more classes; all in --json)")
        else:
            lines.append(f"{c['name']:<{width}}  {c['iou']:6.2f}  {c['episodes']:8d}")
    lines.append("")
    lines.append(f"{'query fg size':<13}  {'mIoU':>6}  {'episodes':>8}  {'classes':>7}")
    for b in result["buckets"]:
        miou = f"{b['miou']:6.2f}" if b["miou"] is not None else f"{'-':>6}"
        lines.append(f"{b['bucket']:<13}  {miou}  {b['episodes']:8d}  {b['classes']:7d}")
    return "\n".join(lines)


def _check_data(args: argparse.Namespace, reader, info, episodes) -> list[str]:
    """Refuse missing files (unless skipped) and, with --strict, empty ground truths, before
    the model is loaded; the names of the queries whose ground truth is empty."""
    from hmfss.errors import HmfssError

    if not args.skip_bad_images:
        names = dict.fromkeys(n for ep in episodes for n in (ep.query, *ep.supports))
        missing = reader.missing(names)
        if missing is not None:
            raise HmfssError(f"file not found: {missing[1]} (image {missing[0]!r} of the {args.benchmark} "
                             f"{info.split} list; use --skip-bad-images to skip such episodes)")
    empty = empty_ground_truths(reader, episodes, args.skip_bad_images, args.ignore_255)
    if empty and args.strict:
        raise HmfssError(f"the ground truth of {reader.paths(empty[0])[0]} is empty or entirely ignored "
                         f"({len(empty)} such quer{'y' if len(empty) == 1 else 'ies'}; --strict)")
    return empty


def _result(args: argparse.Namespace, info, episodes, protocol: str, img_size: int, model, outcome: dict,
            empty: list[str]) -> dict:
    """Every figure of the run, as written by --json."""
    return {
        "miou": outcome["miou"],
        "fb_iou": outcome["fb_iou"],
        "benchmark": args.benchmark,
        "split": info.split,
        "fold": info.fold,
        "nshot": args.nshot,
        "episodes": len(episodes),
        "evaluated": outcome["evaluated"],
        "skipped": outcome["skipped"],
        "protocol": {
            "name": protocol,
            "seed": args.seed,
            "episodes": len(episodes),
            "img_size": img_size,
            "original_imgsize": bool(args.use_original_imgsize),
            "ignore_255": bool(args.ignore_255) and args.benchmark == "pascal",
            "metric": "mIoU = mean over classes of inter/max(union,1); FB-IoU = mean(bg, fg) of dataset-level IoU",
        },
        "checkpoint": str(args.checkpoint),
        "model": {**model.config.to_dict(), "exact_selection": model.exact_selection},
        "per_class": outcome["classes"],
        "buckets": outcome["buckets"],
        "skipped_episodes": outcome["skipped_episodes"],
        "empty_ground_truth": empty,
    }


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `hmfss --help` imports every command's module
    import json
    from pathlib import Path

    from hmfss.atomic import atomic_write_bytes, remove_stale_temps
    from hmfss.checkpoint import load_model
    from hmfss.cli.predict import check_model_arguments
    from hmfss.data.dataset import EpisodeDataset, episode_loader
    from hmfss.data.readers import make_reader
    from hmfss.errors import HmfssError
    from hmfss.evaluation.evaluate import evaluate
    from hmfss.evaluation.metrics import SegmentationMeter
    from hmfss.inputs import MAX_WORKERS, check_at_most, check_output_dir, check_output_file
    from hmfss.training.distributed import resolve_device

    if args.batch_size < 1:
        raise HmfssError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.workers < 0:
        raise HmfssError(f"--workers must be >= 0, got {args.workers}")
    check_at_most(args.workers, "--workers", MAX_WORKERS)
    check_model_arguments(args)
    check_output_file(args.json, "--json")
    check_output_dir(args.visualize, "--visualize")
    info, episodes, protocol = resolve_episodes(args)
    reader = make_reader(args.benchmark, args.datapath, info)
    empty = _check_data(args, reader, info, episodes)

    device = resolve_device(args.device or "auto")
    model = load_model(args.checkpoint, arch=args.arch, backbone=args.backbone, masking=args.masking,
                       img_size=args.img_size, device=device, benchmark=args.benchmark)
    model.exact_selection = not args.fast_selection
    img_size = int(args.img_size or model.config.img_size)

    reader.draft = (img_size, img_size)  # huge JPEGs decoded at a reduced scale; masks stay full size
    dataset = EpisodeDataset(reader, episodes, img_size, original_size=args.use_original_imgsize,
                             ignore_255=args.ignore_255)
    loader = episode_loader(dataset, args.batch_size, args.workers)
    meter = SegmentationMeter(info.class_ids, info.n_classes, info.class_names)
    outcome = evaluate(model, loader, meter, device=device, original_size=args.use_original_imgsize,
                       skip_bad=args.skip_bad_images, visualize=args.visualize,
                       progress=args.progress and sys.stderr.isatty(), total=len(episodes))
    if outcome["evaluated"] == 0:
        raise HmfssError(f"no episode could be evaluated ({outcome['skipped']} skipped; first: "
                         f"{outcome['skipped_episodes'][0]['error'] if outcome['skipped_episodes'] else '-'})")

    result = _result(args, info, episodes, protocol, img_size, model, outcome, empty)
    if args.json:
        remove_stale_temps(Path(args.json).parent)
        atomic_write_bytes(args.json, (json.dumps(result, indent=2) + "\n").encode("utf-8"))
    if args.skip_bad_images and outcome["skipped"]:
        print(f"skipped {outcome['skipped']} episode(s) with unreadable images; first: "
              f"{outcome['skipped_episodes'][0]['error']}", file=sys.stderr)
    print(format_table(result))
    if empty:
        one = len(empty) == 1
        print(f"note: {len(empty)} quer{'y' if one else 'ies'} with an empty or entirely ignored ground truth "
              f"{'was' if one else 'were'} scored (first: {empty[0]}); --strict refuses them")
    return 0
