"""``hmfss benchmark --train``: the timed training step, its figures and its FLOP count."""

import json

import torch
import torch.nn.functional as F

from hmfss.cli.main import main
from hmfss.evaluation.timing import count_flops
from hmfss.model import build_model
from hmfss.training.benchmark import TrainBenchmarkConfig, random_batch, run_train_benchmark, step_parts
from hmfss.training.step import train_step
from helpers import assert_same_tensors, one_thread  # noqa: F401  (one_thread: autouse fixture)


def test_cli_times_the_step_and_writes_json(tmp_path, capsys):
    path = tmp_path / "train.json"
    assert main(["benchmark", "--train", "--backbone", "efficientnet-lite0", "--img-size", "32", "--batch", "2",
                 "--repeats", "3", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "s / step (median)" in out and "GFLOPs / step (fwd + bwd)" in out
    result = json.loads(path.read_text())
    step = result["step"]
    assert 0 < step["min_s"] <= step["median_s"] <= step["max_s"]
    assert abs(result["episodes_per_s"] * step["median_s"] - 2) < 1e-9  # batch 2 per step
    assert result["config"]["batch"] == 2 and result["peak_memory_mb"] > 0
    assert result["matmul_peak_gflops_per_s"] > 0


def test_step_flops_are_forward_plus_backward_and_the_step_trains():
    cfg = TrainBenchmarkConfig(backbone="efficientnet-lite0", masking="fm", img_size=32, batch=2, repeats=1)
    torch.manual_seed(0)
    model = build_model("hsnet", "efficientnet-lite0", "fm", img_size=32)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    batch = random_batch(cfg)
    args = (batch["query_img"], batch["support_imgs"][:, 0], batch["support_masks"][:, 0])
    model.train()
    forward = count_flops(lambda: model(*args))
    logits = model(*args)
    backward = count_flops(lambda: F.cross_entropy(logits, batch["query_mask"]).backward())
    result = run_train_benchmark(cfg, model)
    assert result["gflops_per_step"] * 1e9 == forward + backward
    assert backward > forward - count_flops(lambda: model.backbone(args[0]))  # the head's backward is counted
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert len(changed) > 0.9 * len(before)  # the head was stepped (taps that only meet padding get no gradient)
    assert all(not p.requires_grad for p in model.backbone.parameters())


def test_batch_one_and_batch_two_flops_scale_linearly():
    flops = [run_train_benchmark(TrainBenchmarkConfig(backbone="efficientnet-lite0", img_size=32, batch=b,
                                                      repeats=1, warmup=0))["gflops_per_step"] for b in (1, 2)]
    assert abs(flops[1] - 2 * flops[0]) < 1e-9 * flops[1]


def test_compile_compiles_the_head_in_place_and_the_steps_are_unchanged(compiled_graphs):
    """--compile traces the head only (the frozen backbone stays eager), keeps the parameter
    names a checkpoint holds, and the compiled steps compute what the eager ones do."""
    cfg = TrainBenchmarkConfig(backbone="efficientnet-lite0", img_size=32, batch=1)
    batch = random_batch(cfg)
    losses, weights = [], []
    for compile in (False, True):
        torch.manual_seed(0)
        model = build_model("hsnet", "efficientnet-lite0", "hm", img_size=32)
        names = list(model.state_dict())
        parts = step_parts(model, torch.device("cpu"), amp=False, compile=compile)
        losses.append([train_step(parts, batch)[0] for _ in range(2)])
        weights.append(model.head.state_dict())
        assert list(model.state_dict()) == names and parts.net is model
        assert (model.head._compiled_call_impl is not None) == compile
        assert model.backbone._compiled_call_impl is None
    # dynamo traced the head's whole forward as one graph (no break), every head parameter in it
    (graph,) = compiled_graphs
    inputs = [n.name for n in graph.graph.nodes if n.op == "placeholder"]
    assert sum("_parameters_" in name for name in inputs) == len(list(model.head.parameters()))
    assert losses[0] == losses[1]
    assert_same_tensors(weights[1], weights[0])


def test_flops_of_a_compiled_step_are_counted_eagerly_without_compiling_again(compiled_graphs):
    cfg = TrainBenchmarkConfig(backbone="efficientnet-lite0", img_size=32, batch=1)
    batch = random_batch(cfg)
    flops = []
    for compile in (False, True):
        torch.manual_seed(0)
        model = build_model("hsnet", "efficientnet-lite0", "hm", img_size=32)
        parts = step_parts(model, torch.device("cpu"), amp=False, compile=compile)
        train_step(parts, batch)
        flops.append(count_flops(lambda: train_step(parts, batch)))
    (graph,) = compiled_graphs  # compiled once, for the step before counting
    assert graph.calls == 1  # the counted step ran the head eagerly
    assert flops[0] > 0 and flops[1] == flops[0]
