import pytest
import torch

from hmfss import build_model, learnable_parameters
from hmfss.heads.conv4d import CenterPivotConv4d
from hmfss.heads.hsnet import HSNetHead


@pytest.mark.parametrize(
    "backbone,count", [("resnet50", 2_573_794), ("resnet101", 2_587_394), ("vgg16", 2_570_018)]
)
def test_learnable_parameter_counts_equal_the_original(backbone, count):
    assert learnable_parameters(build_model("hsnet", backbone, "fm")) == count


def test_layer_shapes_resnet50_at_400():
    head = HSNetHead(levels=(3, 6, 4))
    shapes = []
    for module in head.modules():
        if isinstance(module, CenterPivotConv4d):
            def record(x, _fn=module.forward_cl):
                out = _fn(x)  # (N, Hq, Wq, Hs, Ws, C) -> report as (C, Hq, Wq, Hs, Ws)
                shapes.append((out.shape[-1], *out.shape[1:-1]))
                return out

            module.forward_cl = record
    corr = [torch.rand(1, 3, 13, 13, 13, 13), torch.rand(1, 6, 25, 25, 25, 25), torch.rand(1, 4, 50, 50, 50, 50)]
    with torch.no_grad():
        logits = head(corr)
    assert shapes == [
        (16, 13, 13, 7, 7), (64, 13, 13, 4, 4), (128, 13, 13, 2, 2),
        (16, 25, 25, 7, 7), (64, 25, 25, 4, 4), (128, 25, 25, 2, 2),
        (16, 50, 50, 13, 13), (64, 50, 50, 4, 4), (128, 50, 50, 2, 2),
        (128, 25, 25, 2, 2), (128, 25, 25, 2, 2), (128, 25, 25, 2, 2),
        (128, 50, 50, 2, 2), (128, 50, 50, 2, 2), (128, 50, 50, 2, 2),
    ]
    assert logits.shape == (1, 2, 100, 100)
