"""Evaluation loop: a model over a loader of episodes -> mIoU, FB-IoU and breakdowns.

Metrics are computed at the network input size on nearest-resized ground truth (the
original default) or, with ``original_size``, at each query's original size: the
low-resolution logits are upsampled straight to (H0, W0) before voting, as the original
``--use_original_imgsize`` (here for any batch size and every benchmark).
"""

from __future__ import annotations

import re
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterable

import torch
from PIL import Image
from tqdm import tqdm

from hmfss.atomic import staged_folder
from hmfss.data.io import overlay, save_image_atomic
from hmfss.errors import HmfssError
from hmfss.evaluation.charts import tensor_to_pil
from hmfss.evaluation.metrics import SegmentationMeter

SUPPORT_COLOR = (102, 140, 255)
QUERY_COLOR = (255, 50, 50)


def _strip(panels: list[Image.Image]) -> Image.Image:
    width = sum(p.width for p in panels)
    height = max(p.height for p in panels)
    canvas = Image.new("RGB", (width, height))
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width
    return canvas


def save_visualization(folder: Path, index: int, class_id: int, iou: float, query_name: str,
                       support_imgs: torch.Tensor, support_masks: torch.Tensor, query_img: torch.Tensor,
                       pred: torch.Tensor, gt: torch.Tensor) -> Path:
    """One strip: supports with their masks (blue), query with prediction, query with ground truth (red).

    The query panels are shown at the size ``pred`` / ``gt`` were evaluated at.
    """
    size = tuple(gt.shape[-2:])
    panels = [overlay(tensor_to_pil(img), m.detach().cpu().numpy() > 0.5, SUPPORT_COLOR)
              for img, m in zip(support_imgs, support_masks)]
    query = tensor_to_pil(query_img, size)
    panels.append(overlay(query, pred.detach().cpu().numpy() > 0.5, QUERY_COLOR))
    panels.append(overlay(query, gt.detach().cpu().numpy() > 0.5, QUERY_COLOR))
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(query_name).stem)[:60]
    path = folder / f"{index:05d}_class-{class_id}_{stem}_iou-{100 * iou:.1f}.jpg"
    return save_image_atomic(_strip(panels), path)


def _batch_tensors(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (batch["query_img"].to(device), batch["support_imgs"].to(device), batch["support_masks"].to(device))


def evaluate(
    model: torch.nn.Module,
    loader: Iterable[dict],
    meter: SegmentationMeter,
    device: str | torch.device = "cpu",
    original_size: bool = False,
    skip_bad: bool = False,
    visualize: str | Path | None = None,
    progress: bool = True,
    total: int | None = None,
) -> dict[str, Any]:
    """Run the model over every batch of ``loader`` and accumulate ``meter``.

    A batch entry whose files could not be read raises :class:`HmfssError` with its message,
    or with ``skip_bad`` is skipped and counted. Returns ``meter.summary()`` plus
    ``evaluated``, ``skipped`` and ``skipped_episodes`` [(index, message)].
    """
    device = torch.device(device)
    skipped: list[tuple[int, str]] = []
    model.eval()
    bar = tqdm(total=total, unit="ep", desc="test", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    # visualizations move into place when every batch has run: a failed run leaves none
    with (staged_folder(visualize) if visualize is not None else nullcontext()) as vis_dir:
        try:
            for batch in loader:
                if batch["errors"]:
                    if not skip_bad:
                        raise HmfssError(batch["errors"][0][1])
                    skipped += batch["errors"]
                if batch["size"]:
                    _evaluate_batch(model, batch, meter, device, original_size, vis_dir)
                bar.update(batch["size"] + len(batch["errors"]))
                if meter.count:
                    bar.set_postfix(mIoU=f"{meter.miou():.2f}", FB=f"{meter.fb_iou():.2f}",
                                    skipped=len(skipped), refresh=False)
        finally:
            bar.close()
    result = meter.summary()
    result.update(evaluated=meter.count, skipped=len(skipped),
                  skipped_episodes=[{"index": i, "error": msg} for i, msg in skipped])
    return result


@torch.no_grad()
def _evaluate_batch(model, batch: dict, meter: SegmentationMeter, device: torch.device,
                    original_size: bool, vis_dir: Path | None) -> None:
    query, supports, masks = _batch_tensors(batch, device)
    if original_size:
        sizes = [tuple(int(v) for v in s) for s in batch["org_query_size"]]
        preds = model.predict_mask(query, supports, masks, output_size=sizes, allow_empty_support=True)
        gts, ignores = batch["query_mask_full"], batch["query_ignore_full"]
    else:
        preds = model.predict_mask(query, supports, masks, allow_empty_support=True)
        gts, ignores = batch["query_mask"], batch["query_ignore"]
    for i in range(batch["size"]):
        pred = preds[i].detach().cpu()
        cid = int(batch["class_id"][i])
        iou = meter.add(cid, pred, gts[i], ignores[i])
        if vis_dir is not None:
            save_visualization(vis_dir, batch["index"][i], cid, iou, batch["query_name"][i],
                               batch["support_imgs"][i], batch["support_masks"][i], batch["query_img"][i],
                               pred, gts[i])
