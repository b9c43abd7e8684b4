"""A tiny model and a two-class support folder with two queries, shared by the app tests."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hmfss import build_model, save_checkpoint


def _rect_mask(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    top, left, bottom, right = box
    mask[top:bottom, left:right] = 255
    return mask


@pytest.fixture(scope="session")
def app_files(tmp_path_factory) -> dict[str, Path]:
    """tiny.pt (HSNet-HM, EfficientNet-Lite0, 64 px), support/<cat|dog>/{images,masks}, queries/."""
    root = tmp_path_factory.mktemp("app")
    torch.manual_seed(0)
    save_checkpoint(build_model("hsnet", "efficientnet-lite0", "hm", img_size=64), root / "tiny.pt")
    rng = np.random.default_rng(0)
    for name, box in (("cat", (10, 20, 40, 60)), ("dog", (5, 5, 30, 30))):
        (root / "support" / name / "images").mkdir(parents=True)
        (root / "support" / name / "masks").mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), np.uint8)).save(root / "support" / name / "images" / f"{name}1.png")
        Image.fromarray(_rect_mask(60, 80, box)).save(root / "support" / name / "masks" / f"{name}1.png")
    (root / "queries").mkdir()
    for i, (h, w) in enumerate(((50, 70), (64, 48))):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(root / "queries" / f"q{i}.png")
    return {"root": root, "ckpt": root / "tiny.pt", "support": root / "support", "queries": root / "queries"}
