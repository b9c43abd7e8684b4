"""A CPU training step gives the same gradients in every run, on several threads.

Resumed runs end with the weights of uninterrupted ones only if every step is a function of
its inputs: no kernel may add with atomics in an order the threads choose. The check: one
step's head gradients on two threads equal, bit for bit, those PyTorch's deterministic mode
computes (which runs such kernels serially or refuses them). At 320 px HSNet's dense
support-plane matrices are large enough (>= 32,768 gathered elements) for PyTorch's parallel
paths: their former gather failed this check in every run. VAT is left out for time (its
volumes have fixed sizes, so its CPU step takes ~10 s at any image size); it passed this
check at 48 px, 96 px and 240 px when the test was written.
"""

import pytest
import torch
import torch.nn.functional as F

from hmfss.model import build_model
from hmfss.training.benchmark import TrainBenchmarkConfig, random_batch
from helpers import assert_same_tensors, plain_and_deterministic


def head_gradients(model, batch) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)  # a head with dropout draws the same masks in every run
    model.zero_grad(set_to_none=True)
    logits = model(batch["query_img"], batch["support_imgs"][:, 0], batch["support_masks"][:, 0])
    F.cross_entropy(logits, batch["query_mask"]).backward()
    return {n: p.grad.clone() for n, p in model.head.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch,img_size", [("hsnet", 320), ("asnet", 257)])
def test_training_gradients_equal_those_of_deterministic_mode(arch, img_size):
    torch.manual_seed(0)
    model = build_model(arch, "efficientnet-lite0", "hm", img_size=img_size).train()
    batch = random_batch(TrainBenchmarkConfig(arch=arch, backbone="efficientnet-lite0", img_size=img_size, batch=2))
    grads, reference = plain_and_deterministic(lambda: head_gradients(model, batch))
    assert len(reference) > 10
    assert_same_tensors(grads, reference)
