"""hmfss: few-shot semantic segmentation with hybrid masking (HM, ECCV 2022).

Pipeline: image -> frozen backbone features -> support masking (none/fm/im/hm/...) ->
4D cosine correlation -> head (HSNet, ...) -> 2-class logits -> mask.
"""

__version__ = "0.1.0"

from .errors import HmfssError
from .model import FewShotSegmenter, ModelConfig, SupportState, build_model, learnable_parameters, vote
from .engine.checkpoint import load_checkpoint, load_model, save_checkpoint

__all__ = [
    "__version__",
    "HmfssError",
    "FewShotSegmenter",
    "ModelConfig",
    "SupportState",
    "build_model",
    "learnable_parameters",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
    "vote",
]
