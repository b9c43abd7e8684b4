"""VGG16 tapping conv4_x and conv5_x before their ReLU, and pool5."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from hmfss.backbones.base import Backbone, BackboneInfo
from hmfss.errors import HmfssError


_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
_VGG16_TAPS = (17, 19, 21, 24, 26, 28, 30)  # indices in `features`: conv4_x, conv5_x pre-ReLU, pool5


class VGG16Backbone(Backbone):
    """VGG16 tapping conv4_1-3 and conv5_1-3 before their ReLU, and pool5."""

    ignored_keys = ("classifier.",)

    def __init__(self, extra_shallow: bool = False):
        if extra_shallow:
            raise HmfssError("the vgg16 backbone has no extra shallow feature (VAT needs a ResNet)")
        super().__init__(extra_shallow)
        layers: list[nn.Module] = []
        channels = 3
        for item in _VGG16_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=True)]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        # five unpadded 2x2 max pools before pool5: each side must be at least 2**5
        self.info = BackboneInfo(channels=(512,) * 7, levels=(1, 3, 3), min_side=32)
        self.eval()

    def extract(self, images: Tensor) -> list[Tensor]:
        feats: list[Tensor] = []
        x = images
        for index, module in enumerate(self.features):
            if isinstance(module, nn.ReLU):
                x = F.relu(x)
            else:
                x = module(x)
            if index in _VGG16_TAPS:
                feats.append(x)
            if index == _VGG16_TAPS[-1]:
                break
        return feats
