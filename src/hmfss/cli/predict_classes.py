"""``hmfss predict --support-dir DIR``: several classes at once (see :mod:`hmfss.app.pipeline`).

Per query: ``<stem>_labels.png`` (palette, pixel = class index), ``<stem>_overlay.png`` (with a
legend) and ``<stem>_mask_<class>.png``; one ``labels.json``. Support states are encoded once
per class and reused for every query.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def run_support_dir(args: argparse.Namespace, queries: list[Path], stems: list[str]) -> int:
    """Segment ``queries`` (output names ``stems``) against every class of ``--support-dir``."""
    from hmfss.app.outputs import output_suffixes, write_results
    from hmfss.app.pipeline import MultiClassSegmenter, read_support_dir
    from hmfss.checkpoint import load_model
    from hmfss.cli.outputs import check_output_files, progress_bar, query_outputs
    from hmfss.data.io import read_image
    from hmfss.training.distributed import resolve_device

    classes = read_support_dir(args.support_dir)
    support_files = [p for p in Path(args.support_dir).rglob("*") if p.is_file()]
    check_output_files(Path(args.out), query_outputs(queries, stems, output_suffixes([c.name for c in classes]))
                       + [("labels.json", Path(args.support_dir))], queries + support_files)
    model = load_model(args.checkpoint, args.arch, args.backbone, args.masking, args.img_size,
                       device=resolve_device(args.device))
    model.exact_selection = not args.fast_selection
    segmenter = MultiClassSegmenter.prepare(model, classes)
    out_dir = Path(args.out)
    written = 0
    with progress_bar(len(queries)) as bar:
        for start in range(0, len(queries), args.batch_size):  # read and write one batch at a time
            chunk = [read_image(p) for p in queries[start:start + args.batch_size]]
            preds = [p for p, _ in segmenter.segment(chunk, args.batch_size, args.threshold)]
            written += len(write_results(out_dir, stems[start:start + len(chunk)], chunk, preds,
                                         segmenter.names, args.threshold)) - 1
            bar.update(len(chunk))
    print(f"wrote {written + 1} files ({len(segmenter.names)} classes) to {out_dir}")
    return 0
