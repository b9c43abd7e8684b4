"""``hmfss data``: dataset preparation tools.

* ``hmfss data splits --out DIR``: download the standard split lists (original HSNet repository)
* ``hmfss data coco-masks --annotations instances_train2014.json instances_val2014.json --out DIR``
* ``hmfss data voc-aug --voc VOC2012 --sbd SBD/dataset --out VOC2012/SegmentationClassAug``
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="prepare datasets (synthetic benchmark, split lists, COCO masks, VOC SegmentationClassAug)",
                       description="Dataset preparation tools.")
    tools = p.add_subparsers(dest="tool", metavar="TOOL", required=True)
    from hmfss.cli.synthetic import register_synthetic

    register_synthetic(tools)

    s = tools.add_parser("splits", help="download the standard split lists of the original HSNet repository",
                         description="Download pascal/{trn,val}/foldN.txt, coco/{trn,val}/foldN.pkl and "
                                     "fss/{trn,val,test}.txt into OUT (existing files are kept).")
    s.add_argument("--out", required=True, help="folder to write the lists to (pass it as --splits later)")
    s.add_argument("--base-url", default=None,
                   help="where the lists live (default: the raw files of github.com/juhongm999/hsnet, data/splits)")
    s.add_argument("--force", action="store_true", help="download files that already exist again")
    s.set_defaults(func=run_splits)

    c = tools.add_parser("coco-masks", help="build COCO-20i semantic PNG masks from the official COCO json",
                         description="Write OUT/<train2014|val2014>/<image stem>.png with values 1..80 "
                                     "(COCO's standard category order) and 0 for background. Resumable: "
                                     "finished files are skipped. Needs pycocotools.")
    c.add_argument("--annotations", nargs="+", required=True, metavar="JSON",
                   help="instances_train2014.json and/or instances_val2014.json")
    c.add_argument("--out", required=True, help="mask root, normally DATAPATH/COCO2014/annotations")
    c.add_argument("--skip-crowd", action="store_true", help="leave crowd regions (iscrowd=1) as background")
    c.set_defaults(func=run_coco_masks)

    v = tools.add_parser("voc-aug", help="build PASCAL SegmentationClassAug PNGs from SBD .mat files + VOC2012",
                         description="Write OUT/<name>.png (0..20, 255 = boundary) from VOC2012 "
                                     "SegmentationClass PNGs and, for the other images, SBD cls/*.mat "
                                     "masks. Resumable. Needs scipy.")
    v.add_argument("--voc", default=None, help="VOC2012 folder (with SegmentationClass/)")
    v.add_argument("--sbd", default=None, help="SBD dataset folder (with cls/*.mat)")
    v.add_argument("--out", required=True, help="output folder, normally DATAPATH/VOC2012/SegmentationClassAug")
    v.set_defaults(func=run_voc_aug)


def _progress_enabled() -> bool:
    return sys.stderr.isatty()


def run_splits(args: argparse.Namespace) -> int:
    from hmfss.data.tools import DEFAULT_SPLITS_URL, SPLIT_FILES, download_splits
    from hmfss.inputs import check_output_dir  # torch-heavy: kept out of `hmfss --help`

    check_output_dir(args.out, "--out")

    written = download_splits(args.out, args.base_url or DEFAULT_SPLITS_URL, force=args.force,
                              progress=_progress_enabled())
    print(f"{len(written)} split list(s) downloaded, {len(SPLIT_FILES) - len(written)} already present, in {args.out}")
    return 0


def run_coco_masks(args: argparse.Namespace) -> int:
    from hmfss.data.tools import coco_masks
    from hmfss.inputs import check_output_dir  # torch-heavy: kept out of `hmfss --help`

    check_output_dir(args.out, "--out")

    counts = coco_masks(args.annotations, args.out, skip_crowd=args.skip_crowd, progress=_progress_enabled())
    print(f"{counts['written']} mask(s) written, {counts['skipped']} already present, in {args.out}")
    return 0


def run_voc_aug(args: argparse.Namespace) -> int:
    from hmfss.data.tools import voc_aug
    from hmfss.inputs import check_output_dir  # torch-heavy: kept out of `hmfss --help`

    check_output_dir(args.out, "--out")

    counts = voc_aug(args.sbd, args.voc, args.out, progress=_progress_enabled())
    print(f"{counts['voc']} mask(s) from VOC2012, {counts['sbd']} from SBD, "
          f"{counts['skipped']} already present, in {args.out}")
    return 0
