"""``hmfss data synthetic``: generate the embedded synthetic benchmark (FSS-1000 layout).

Wired into ``hmfss data`` through :func:`register_synthetic` / :func:`run_synthetic`.
"""

from __future__ import annotations

import argparse


def register_synthetic(data_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = data_subparsers.add_parser(
        "synthetic",
        help="generate a synthetic few-shot segmentation benchmark (FSS-1000 layout)",
        description="Write OUT/FSS-1000/<category>/<n>.jpg|png and the split lists "
                    "OUT/splits/fss/{trn,val,test}.txt, deterministically from --seed. Classes are "
                    "shape x texture x colour appearances pasted at varied scales (also < 2%% of the "
                    "image) onto varied backgrounds with clutter of other classes. Use it with "
                    "--benchmark fss --datapath OUT --splits OUT/splits.",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--classes", type=int, default=120, help="number of classes (default 120, at most 720)")
    p.add_argument("--images-per-class", type=int, default=10, help="images per class (default 10, as FSS-1000)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0); same seed = same files")
    p.add_argument("--test-ratio", type=float, default=0.25, help="fraction of test classes (default 0.25)")
    p.add_argument("--val-ratio", type=float, default=0.1, help="fraction of val classes (default 0.1)")
    p.add_argument("--small-ratio", type=float, default=0.25,
                   help="fraction of images whose object covers < 2%% of the image (default 0.25)")
    p.set_defaults(func=run_synthetic)
    return p


def run_synthetic(args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from hmfss.data.synthetic import SyntheticParams, check_params, generate
    from hmfss.inputs import check_output_dir

    check_output_dir(args.out, "--out")

    params = SyntheticParams(classes=args.classes, images_per_class=args.images_per_class, size=args.size,
                             seed=args.seed, test_ratio=args.test_ratio, val_ratio=args.val_ratio,
                             small_ratio=args.small_ratio)
    check_params(params)
    bar = tqdm(total=params.classes * params.images_per_class, unit="img", desc="synthetic",
               disable=not sys.stderr.isatty(), file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        meta = generate(args.out, params, progress)
    finally:
        bar.close()
    counts = meta["counts"]
    print(f"synthetic benchmark in {args.out}: {counts['trn']} trn / {counts['val']} val / {counts['test']} test "
          f"classes x {params.images_per_class} images; split lists in {args.out}/splits "
          f"(use --benchmark fss --datapath {args.out} --splits {args.out}/splits)")
    return 0
