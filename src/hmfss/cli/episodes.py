"""``hmfss episodes``: print the test episodes of a benchmark split as JSON lines.

One ``{"query": ..., "supports": [...], "class_id": int}`` per line, computed from the split
lists alone (no image is read). ``--protocol hsnet`` (default for pascal/coco/fss) gives the
episodes of the original HSNet test loaders, in the same order.
"""

from __future__ import annotations

import argparse
import sys


def add_benchmark_arguments(p: argparse.ArgumentParser, datapath_required: bool = False) -> None:
    """Benchmark / split / episode options shared by ``hmfss episodes`` and ``hmfss test``."""
    p.add_argument("--benchmark", required=True, choices=("pascal", "coco", "fss", "folder"),
                   help="pascal (PASCAL-5i), coco (COCO-20i), fss (FSS-1000) or folder (custom data)")
    p.add_argument("--datapath", required=datapath_required, default=None,
                   help="dataset root (holds VOC2012/, COCO2014/, FSS-1000/; for folder: DIR/<class>/images|masks)")
    p.add_argument("--splits", default=None,
                   help="split-list folder (pascal/, coco/, fss/); default $HMFSS_SPLITS or DATAPATH/splits. "
                        "Get the standard lists with `hmfss data splits --out DIR`")
    p.add_argument("--fold", type=int, default=0, help="fold 0-3 (pascal, coco; default 0)")
    p.add_argument("--nshot", type=int, default=1, help="support images per episode (default 1)")
    p.add_argument("--split", default="test", choices=("test", "val", "trn"),
                   help="split (default test; pascal/coco val = test, as the originals)")
    p.add_argument("--episodes", type=int, default=None,
                   help="number of episodes (default: 1000 pascal/coco, every image once for fss/folder)")
    p.add_argument("--seed", type=int, default=0, help="episode seed (default 0, the originals' seed)")
    p.add_argument("--protocol", default=None, choices=("hsnet", "asnet", "seeded"),
                   help="episode sampling: hsnet = original HSNet loaders (default for pascal/coco/fss), "
                        "asnet = re-seeded per episode, seeded = independent per-episode draws with "
                        "distinct supports (default for folder)")
    p.add_argument("--classes", default=None, metavar="FILE",
                   help="folder: file listing the test classes (one per line); the others are trn classes")
    p.add_argument("--test-ratio", type=float, default=None,
                   help="folder: pick this fraction of classes at random (--split-seed) as test classes "
                        "(default: every class is a test class)")
    p.add_argument("--split-seed", type=int, default=0, help="folder: seed of --test-ratio (default 0)")


def resolve_episodes(args: argparse.Namespace):
    """(SplitInfo, episodes, protocol) of the parsed benchmark arguments."""
    from hmfss.data.episodes import default_protocol, make_episodes
    from hmfss.data.splits import default_splits_dir, load_split
    from hmfss.errors import HmfssError
    from hmfss.inputs import check_seed

    check_seed(args.seed, "--seed")
    check_seed(args.split_seed, "--split-seed")
    info = load_split(args.benchmark, args.splits, args.fold, args.split, datapath=args.datapath,
                      classes_file=args.classes, test_ratio=args.test_ratio, split_seed=args.split_seed)
    if not info.entries:
        where = args.datapath if args.benchmark == "folder" else (args.splits or default_splits_dir(args.datapath))
        raise HmfssError(f"the {args.benchmark} {info.split} split has no images: its list in {where} is empty")
    protocol = args.protocol or default_protocol(args.benchmark)
    episodes = make_episodes(info, args.nshot, args.episodes, args.seed, protocol)
    return info, episodes, protocol


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "episodes",
        help="print the test episodes of a benchmark as JSON lines",
        description="Print one JSON object per episode: {\"query\", \"supports\", \"class_id\"}. "
                    "Computed from the split lists alone; --protocol hsnet reproduces the original "
                    "HSNet test episodes exactly.",
    )
    add_benchmark_arguments(p)
    p.add_argument("--out", default=None, help="write to this file instead of stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import io
    import os

    from hmfss.data.episodes import write_jsonl
    from pathlib import Path

    from hmfss.atomic import atomic_write_bytes, remove_stale_temps
    from hmfss.inputs import check_output_file

    check_output_file(args.out, "--out")
    _, episodes, _ = resolve_episodes(args)
    if args.out:
        text = io.StringIO()
        write_jsonl(episodes, text)
        remove_stale_temps(Path(args.out).parent)
        atomic_write_bytes(args.out, text.getvalue().encode("utf-8"))
        return 0
    try:
        write_jsonl(episodes, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `hmfss episodes ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
