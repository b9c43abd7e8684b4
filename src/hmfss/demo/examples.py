"""The demo's example panels: support, query with ground truth, and both models' predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hmfss.checkpoint import load_model
from hmfss.data.dataset import EpisodeDataset
from hmfss.data.episodes import Episode
from hmfss.data.readers import make_reader
from hmfss.data.splits import load_split
from hmfss.evaluation.charts import outline, panel_grid, tensor_to_pil
from hmfss.evaluation.metrics import area_stats

YELLOW, GREEN, RED = (255, 255, 0), (0, 255, 0), (255, 0, 0)


def choose_examples(episodes: list[Episode], meta: dict[str, Any], count: int) -> list[Episode]:
    """Episodes for the panels: the smallest targets first, then a spread of sizes (from the
    foreground fractions the generator recorded in ``meta``)."""
    fractions = {}
    for c in meta["classes"]:
        for n, f in enumerate(c["foreground_fraction"], 1):
            fractions[f"{c['name']}/{n}.jpg"] = f
    ranked = sorted(range(len(episodes)), key=lambda i: fractions.get(episodes[i].query, 1.0))
    count = min(count, len(episodes))
    small = ranked[: count // 2]
    rest = [i for i in ranked[len(ranked) // 3:] if i not in small]
    step = max(1, len(rest) // max(count - len(small), 1))
    chosen = small + rest[::step][: count - len(small)]
    return [episodes[i] for i in chosen]


def example_panels(out: Path, checkpoints: dict[str, Path], episodes: list[Episode], size: int) -> Path:
    """figures/examples.png: one row per episode; ``checkpoints``: masking -> checkpoint file."""
    data = out / "data"
    info = load_split("fss", data / "splits", split="test", datapath=data)
    dataset = EpisodeDataset(make_reader("fss", data, info), episodes, size)
    models = {masking: load_model(path) for masking, path in checkpoints.items()}
    rows = [_row(dataset[i], models) for i in range(len(dataset))]
    return panel_grid(rows, out / "figures" / "examples.png", tile=128,
                      header=["support", "query (ground truth)", "HSNet-FM", "HSNet-HM"])


def _row(item: dict[str, Any], models: dict[str, torch.nn.Module]) -> list:
    gt = item["query_mask"]
    query = tensor_to_pil(item["query_img"])
    row = [(outline(tensor_to_pil(item["support_imgs"][0]), item["support_masks"][0].numpy() > 0.5, YELLOW),
            "support + mask"),
           (outline(query, gt.numpy() > 0.5, GREEN), f"query GT {100 * float(gt.mean()):.1f}%")]
    for masking, model in models.items():
        with torch.no_grad():
            pred = model.predict_mask(item["query_img"][None], item["support_imgs"][None],
                                      item["support_masks"][None], allow_empty_support=True)[0]
        inter, union = area_stats(pred, gt)
        iou = 100 * inter[1] / max(union[1], 1)
        row.append((outline(query, pred.numpy() > 0.5, RED), f"{masking.upper()} IoU {iou:.0f}"))
    return row
