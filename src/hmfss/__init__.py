"""hmfss: few-shot semantic segmentation with hybrid masking (HM, ECCV 2022).

Pipeline: image -> frozen backbone features -> support masking (none/fm/im/hm/...) ->
4D cosine correlation -> head (HSNet, VAT, ASNet) -> 2-class logits -> mask.

The public names below are imported on first use, so that ``import hmfss.weights`` (or any
other low layer) does not pull in the model, the heads or torch's training machinery.
"""

from __future__ import annotations

import importlib
from typing import Any

from hmfss.errors import HmfssError

__version__ = "0.1.0"

_LAZY = {
    "FewShotSegmenter": "hmfss.model",
    "ModelConfig": "hmfss.model",
    "SupportState": "hmfss.model",
    "build_model": "hmfss.model",
    "learnable_parameters": "hmfss.model",
    "vote": "hmfss.model",
    "load_checkpoint": "hmfss.checkpoint",
    "load_model": "hmfss.checkpoint",
    "save_checkpoint": "hmfss.checkpoint",
    "ClassPrediction": "hmfss.multiclass",
    "encode_classes": "hmfss.multiclass",
    "segment_classes": "hmfss.multiclass",
    "ClassSupport": "hmfss.app.pipeline",
    "MultiClassSegmenter": "hmfss.app.pipeline",
    "read_support_dir": "hmfss.app.pipeline",
}

__all__ = ["__version__", "HmfssError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hmfss' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
