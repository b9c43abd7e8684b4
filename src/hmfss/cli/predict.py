"""``hmfss predict``: segment query images from K annotated support images.

The support set is encoded once; queries (files or folders) are segmented in batches and
written as ``<stem>_mask.png`` (0/255, at the query's displayed size) and ``<stem>_overlay.png``.
Queries whose stems collide (``a/x.jpg b/x.jpg``, ``x.jpg x.png``) keep as much of their folder
path as tells them apart (``a/x_mask.png``, ``b/x_mask.png``) or their suffix (``x_jpg_mask.png``),
else a number (:mod:`hmfss.cli.outputs`); nothing is written before every query has been decoded.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment query images from annotated support images",
        description="Segment query images given K (image, mask) support pairs.",
    )
    p.add_argument("--checkpoint", required=True, help="hmfss or original HSNet/HSNet-HM checkpoint")
    support = p.add_mutually_exclusive_group(required=True)
    support.add_argument("--support", nargs=2, action="append", metavar=("IMG", "MASK"),
                         help="a support image and its binary mask (repeat for K shots)")
    support.add_argument("--support-dir", metavar="DIR",
                         help="several classes: DIR/<class>/images/* with DIR/<class>/masks/<stem>.png")
    p.add_argument("--threshold", type=float, default=None,
                   help="--support-dir: a class also needs this foreground probability (default: none)")
    p.add_argument("--query", nargs="+", required=True, metavar="PATH", help="query images or folders")
    p.add_argument("--out", required=True, help="output folder")
    add_model_arguments(p)
    p.add_argument("--batch-size", type=int, default=4, help="queries per forward pass (default 4)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    add_max_pixels_argument(p)
    p.set_defaults(func=run)


def add_max_pixels_argument(p: argparse.ArgumentParser) -> None:
    """--max-pixels: images larger than this are refused before being decoded."""
    from hmfss.data.io import DEFAULT_MAX_PIXELS

    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=f"refuse images of more than N pixels (width x height; default {DEFAULT_MAX_PIXELS})")


def check_model_arguments(args: argparse.Namespace) -> None:
    """Refuse bad --img-size / --device / --max-pixels before any file is read."""
    from hmfss.data.io import set_max_pixels
    from hmfss.inputs import check_device, check_img_size

    check_img_size(args.img_size, "--img-size", optional=True)
    check_device(args.device)
    set_max_pixels(args.max_pixels)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--arch/--backbone/--masking/--img-size: optional for hmfss checkpoints."""
    p.add_argument("--arch", default=None, help="hsnet | vat | asnet (default: the checkpoint's; needed for original checkpoints)")
    p.add_argument("--backbone", default=None, help="resnet50 | resnet101 | vgg16 | efficientnet-lite0 (default: the checkpoint's)")
    p.add_argument("--masking", default=None, help="none | fm | im | hm | hm-add | hm-reverse (default: the checkpoint's, else hm)")
    p.add_argument("--img-size", type=int, default=None, help="network input size (default: the checkpoint's, else the head's)")
    add_selection_argument(p)


def add_selection_argument(p: argparse.ArgumentParser) -> None:
    """--fast-selection: FewShotSegmenter.exact_selection off (CPU speed over bit-exact HM)."""
    p.add_argument("--fast-selection", action="store_true",
                   help="CPU, HSNet: run HM's support pass channels-last too (faster; a feature within rounding "
                        "of 0 may pick the other value, so results can differ slightly from the original's)")


def expand_queries(paths: list[str]) -> list[Path]:
    """Files as given; folders expanded to their images (sorted)."""
    from hmfss.data.io import list_images
    from hmfss.errors import HmfssError

    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise HmfssError(f"no images in folder {path}")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise HmfssError(f"query not found: {path}")
    return out


def load_support_set(pairs: list[list[str]], size: int):
    """Read and check the (image, mask) pairs -> (1, K, 3, S, S), (1, K, S, S) tensors."""
    import torch

    from hmfss.data.io import check_image_file, read_image, read_mask
    from hmfss.data.transforms import image_to_tensor, resize_mask_nearest
    from hmfss.errors import HmfssError

    images, masks = [], []
    for img_path, mask_path in pairs:
        width, height = check_image_file(img_path)
        img = read_image(img_path, draft=(size, size))  # a huge JPEG is decoded at a reduced scale
        mask = read_mask(mask_path)
        if mask.shape != (height, width):
            raise HmfssError(
                f"support mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image "
                f"{img_path} is {width}x{height}"
            )
        if not mask.any():
            raise HmfssError(f"support mask {mask_path} is empty (no foreground pixel)")
        resized = resize_mask_nearest(mask, size)
        if not resized.any():
            raise HmfssError(f"support mask {mask_path} vanishes when resized to {size}x{size}; the object is too small")
        images.append(image_to_tensor(img, size))
        masks.append(resized)
    return torch.stack(images)[None], torch.stack(masks)[None]


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from hmfss.data.io import overlay, read_image, save_image_atomic
    from hmfss.data.transforms import image_to_tensor
    from hmfss.checkpoint import load_model
    from hmfss.training.distributed import resolve_device
    from hmfss.errors import HmfssError
    from hmfss.inputs import check_output_dir, check_threshold
    from hmfss.atomic import remove_stale_temps
    from hmfss.cli.outputs import check_output_files, check_queries_decode, output_names, progress_bar, query_outputs

    if args.batch_size < 1:
        raise HmfssError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_threshold(args.threshold, "--threshold")
    if args.threshold is not None and args.support_dir is None:
        raise HmfssError("--threshold applies to several classes (--support-dir); with --support the mask is "
                         "the 2-class argmax")
    check_model_arguments(args)
    out_dir = check_output_dir(args.out, "--out")
    queries = list(dict.fromkeys(p.resolve() for p in expand_queries(args.query)))
    names = output_names(queries)
    check_queries_decode(queries)
    if args.support_dir is not None:
        from hmfss.cli.predict_classes import run_support_dir

        return run_support_dir(args, queries, names)
    check_output_files(out_dir, query_outputs(queries, names, ["_mask.png", "_overlay.png"]),
                       queries + [Path(p) for pair in args.support for p in pair])
    device = resolve_device(args.device)
    model = load_model(args.checkpoint, args.arch, args.backbone, args.masking, args.img_size, device=device)
    model.exact_selection = not args.fast_selection
    size = model.config.img_size
    support_imgs, support_masks = load_support_set(args.support, size)
    remove_stale_temps(out_dir)  # the folder itself is made by the first write
    replaced = 0
    with torch.inference_mode():
        state = model.encode_support(support_imgs.to(device), support_masks.to(device))
        with progress_bar(len(queries)) as bar:
            for start in range(0, len(queries), args.batch_size):
                chunk = queries[start:start + args.batch_size]
                originals = [read_image(p) for p in chunk]
                batch = torch.stack([image_to_tensor(img, size) for img in originals]).to(device)
                masks = model.segment(batch, state, output_size=[(img.height, img.width) for img in originals])
                for img, mask, name in zip(originals, masks, names[start:start + len(chunk)]):
                    binary = mask.cpu().numpy().astype(np.uint8)
                    for path, picture in ((out_dir / f"{name}_mask.png", Image.fromarray(binary * 255)),
                                          (out_dir / f"{name}_overlay.png", overlay(img, binary))):
                        replaced += path.exists()
                        save_image_atomic(picture, path)
                del originals, batch
                bar.update(len(chunk))
    note = f" ({replaced} of them replaced files of an earlier run)" if replaced else ""
    print(f"wrote {2 * len(queries)} files to {out_dir}{note}")
    return 0

