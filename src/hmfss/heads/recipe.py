"""Training recipes of the original models (their published training settings), as data the
trainer reads.

Every head class carries a :class:`Recipe` as its ``recipe`` attribute. The defaults are
HSNet's (Adam, lr 1e-3, no weight decay, constant schedule, 400x400 images, no augmentation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class PhotometricAugmentation:
    """VAT's photometric ("CATs") augmentation, with the magnitudes written out.

    The original applies, to the query and to every support image independently and before
    resizing and normalisation, each of these ops with probability ``p`` in this order:
    to-gray; posterize to ``posterize_bits`` bits; histogram equalisation (per channel);
    sharpen (a 3x3 Laplacian-sharpening kernel with lightness drawn from ``sharpen_lightness``
    blended with identity by alpha drawn from ``sharpen_alpha``); brightness/contrast (additive
    brightness ``b * 255``, b in ±``brightness_limit``, and contrast factor 1 + c, c in
    ±``contrast_limit``, for uint8 images); solarize (invert pixels >= ``solarize_threshold``);
    colour jitter (brightness, contrast, saturation factors in 1 ± value, hue shift in
    ±``jitter_hue`` of a turn, the four in random order). The values are those of
    albumentations 1.x's defaults, which the original relied on without setting them.
    Geometric augmentation is off in every shipped configuration. Masks are not changed.
    Applied by :func:`hmfss.data.augment.photometric_augment` (plain torch).
    """

    p: float = 0.2
    ops: tuple[str, ...] = (
        "to_gray", "posterize", "equalize", "sharpen", "brightness_contrast", "solarize", "color_jitter",
    )
    posterize_bits: int = 4
    sharpen_alpha: tuple[float, float] = (0.2, 0.5)
    sharpen_lightness: tuple[float, float] = (0.5, 1.0)
    brightness_limit: float = 0.2
    contrast_limit: float = 0.2
    solarize_threshold: int = 128
    jitter_brightness: float = 0.2
    jitter_contrast: float = 0.2
    jitter_saturation: float = 0.2
    jitter_hue: float = 0.2


@dataclass(frozen=True)
class Recipe:
    """Optimiser, image size, batch and epoch budget of an original training run.

    ``decoder_lr`` / ``decoder_weight_decay`` (VAT) put the parameters whose name contains
    "decoder" into a second optimiser group; :meth:`param_groups` builds the groups.
    """

    optimizer: str = "adam"  # "adam" | "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    decoder_lr: float | None = None
    decoder_weight_decay: float | None = None
    schedule: str = "constant"
    img_size: int = 400
    img_sizes: dict[str, int] = field(default_factory=dict)  # per-benchmark overrides
    batch_size: int = 20
    batch_sizes: dict[str, int] = field(default_factory=dict)
    epochs: int | None = None  # None: no fixed budget in the original (train until converged)
    epochs_per_benchmark: dict[str, int] = field(default_factory=dict)
    augmentation: PhotometricAugmentation | None = None

    def image_size(self, benchmark: str | None = None) -> int:
        """Square training / evaluation input size for ``benchmark``."""
        return self.img_sizes.get(benchmark or "", self.img_size)

    def batch(self, benchmark: str | None = None) -> int:
        """The original batch size (episodes per step) for ``benchmark``."""
        return self.batch_sizes.get(benchmark or "", self.batch_size)

    def param_groups(self, module: nn.Module) -> list[dict[str, Any]]:
        """Optimiser parameter groups over the trainable parameters of ``module``."""
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if self.decoder_lr is None and self.decoder_weight_decay is None:
            return [{"params": [p for _, p in named], "lr": self.lr, "weight_decay": self.weight_decay}]
        decoder = [p for n, p in named if "decoder" in n]
        rest = [p for n, p in named if "decoder" not in n]
        return [
            {"params": rest, "lr": self.lr, "weight_decay": self.weight_decay},
            {
                "params": decoder,
                "lr": self.decoder_lr if self.decoder_lr is not None else self.lr,
                "weight_decay": (
                    self.decoder_weight_decay if self.decoder_weight_decay is not None else self.weight_decay
                ),
            },
        ]


HSNET_RECIPE = Recipe(batch_sizes={"coco": 40})

VAT_RECIPE = Recipe(
    optimizer="adamw",
    lr=5e-4,
    weight_decay=0.0,
    decoder_lr=5e-4,
    decoder_weight_decay=0.0,
    img_size=473,
    img_sizes={"coco": 417},
    batch_size=16,
    epochs=300,
    epochs_per_benchmark={"coco": 400},
    augmentation=PhotometricAugmentation(),
)

ASNET_RECIPE = Recipe(optimizer="adam", lr=1e-3, img_size=400, batch_size=12)
