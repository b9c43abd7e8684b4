"""Loading a checkpoint builds its model without drawing random weights (hmfss.skip_init)."""

from __future__ import annotations

import threading

import torch
from torch import nn

from hmfss import build_model, load_model, save_checkpoint
from hmfss.skip_init import random_init_skipped


def _linear(seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(5, 3)


def test_random_fills_are_skipped_in_the_calling_thread_only():
    reference = _linear(7)
    built_elsewhere = {}

    def other_thread():
        built_elsewhere["layer"] = _linear(7)

    with random_init_skipped():
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        torch.manual_seed(3)
        state = torch.random.get_rng_state()
        nn.Linear(5, 3)
        with random_init_skipped():  # nested use in the same thread
            nn.Conv2d(2, 4, 3)
        assert torch.equal(torch.random.get_rng_state(), state)  # nothing drawn here
    assert torch.equal(built_elsewhere["layer"].weight, reference.weight)
    assert torch.equal(built_elsewhere["layer"].bias, reference.bias)
    after = _linear(7)  # and the usual initialisation is back afterwards
    assert torch.equal(after.weight, reference.weight) and torch.equal(after.bias, reference.bias)


def test_load_model_draws_no_random_numbers_and_loads_every_weight(tmp_path):
    torch.manual_seed(0)
    model = build_model("vat", "efficientnet-lite0", "hm", benchmark="fss")  # Swin blocks: normal_ fills
    path = save_checkpoint(model, tmp_path / "vat.pt")
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    loaded = load_model(path)
    assert torch.equal(torch.random.get_rng_state(), state)
    own = loaded.state_dict()
    assert own.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(own[key], value), key
    for (name, buffer), (_, expected) in zip(loaded.named_buffers(), model.named_buffers()):
        assert torch.equal(buffer, expected), name  # computed buffers too (not in the file)
