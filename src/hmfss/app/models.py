"""Which model the app uses, and a plain description of it (architecture, training data).

By default the app looks for the checkpoints ``hmfss demo`` writes (``./hmfss-demo/``).
hmfss checkpoints written by training record their ``train_config`` (benchmark, data folder);
a model trained on the demo's synthetic benchmark gets a plain warning that real photos need
a model trained on real data, with where the published HM checkpoints are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hmfss.checkpoint import checkpoint_state, load_model, read_checkpoint
from hmfss.errors import HmfssError
from hmfss.model import FewShotSegmenter

DEMO_DIR = Path("hmfss-demo")  # ``hmfss demo``'s default --out
DEMO_CHECKPOINTS = ("hsnet-hm-efficientnet-lite0.pt", "hsnet-fm-efficientnet-lite0.pt")
NO_MODEL = ("No model yet. Run `hmfss demo` (about 7 minutes on a CPU; it writes "
            "`hmfss-demo/hsnet-hm-efficientnet-lite0.pt`), give the path of an hmfss checkpoint, "
            "or an original HSNet / VAT / ASNet checkpoint with its architecture and backbone.")
PUBLISHED = (
    "The HM authors' trained checkpoints (HSNet-HM, VAT-HM, ASNet-HM on PASCAL-5i, COCO-20i, "
    "FSS-1000) are linked from the README of github.com/moonsh/HM-Hybrid-Masking-ECCV-2022. "
    "Load them as original checkpoints: HSNet-HM with arch `hsnet`, VAT-HM with arch `vat`, "
    "ASNet-HM with arch `asnet` (VAT-HM also needs its benchmark: pascal, coco or fss); backbone `resnet50` or `resnet101`, the one the release lists for "
    "that file."
)


@dataclass
class ModelChoice:
    """Where the model comes from: a checkpoint path, and arch/backbone for original files."""

    path: str
    arch: str | None = None
    backbone: str | None = None
    benchmark: str | None = None  # VAT's data-dependent options, for original VAT files


def default_checkpoint(folder: Path = DEMO_DIR) -> Path | None:
    """The first checkpoint ``hmfss demo`` wrote into ``folder`` (HM first), or None."""
    for name in DEMO_CHECKPOINTS:
        if (folder / name).is_file():
            return folder / name
    return None


def _synthetic(train: dict[str, Any], path: Path) -> bool:
    """Whether the model was trained on a generated (synthetic) benchmark."""
    datapath = train.get("datapath")
    if datapath and (Path(datapath) / "synthetic.json").is_file():  # written by hmfss data synthetic
        return True
    return (path.parent / "demo.json").is_file()  # a checkpoint in a demo folder


def describe(obj: dict[str, Any], model: FewShotSegmenter, path: Path) -> str:
    """Markdown: what the model is and what it was trained on."""
    cfg = model.config
    lines = [f"**Model:** {cfg.arch.upper()} with {cfg.backbone}, masking `{cfg.masking}`, "
             f"input {cfg.img_size}x{cfg.img_size} px, from `{path}`."]
    _, config = checkpoint_state(obj, path)
    train = obj.get("train_config") if config is not None else None
    if config is None:
        lines.append("**Trained on:** unknown (an original checkpoint; its file name usually names the "
                     "benchmark and fold).")
    elif not isinstance(train, dict):
        lines.append("**Trained on:** not recorded in this checkpoint.")
    elif _synthetic(train, path):
        lines.append("**Trained on:** the synthetic shapes benchmark of `hmfss demo`. It has never seen a "
                     "photograph: real photos need a model trained on real data. " + PUBLISHED)
    else:
        where = f" (`{train['datapath']}`)" if train.get("datapath") else ""
        lines.append(f"**Trained on:** benchmark `{train.get('benchmark')}`{where}, fold {train.get('fold', 0)}.")
    if "val_miou" in obj:
        lines.append(f"Best validation mIoU: {obj['val_miou']:.1f}.")
    return "\n\n".join(lines)


def open_model(choice: ModelChoice, device: str) -> tuple[FewShotSegmenter, str]:
    """Load the chosen checkpoint -> (model in eval mode, markdown description)."""
    if not choice.path:
        raise HmfssError(NO_MODEL)
    path = Path(choice.path)
    obj = read_checkpoint(path)
    model = load_model(path, choice.arch or None, choice.backbone or None, device=device,
                       benchmark=choice.benchmark or None)
    return model, describe(obj, model, path)
