import json

import pytest
import torch

from hmfss.cli.main import main
from hmfss.evaluation.benchmark import BenchmarkConfig, naive_predict, random_episode, run_benchmark
from hmfss.fast.folding import fold_backbone
from hmfss.model import build_model


def test_benchmark_reports_every_figure_and_fast_path_equals_naive():
    cfg = BenchmarkConfig(backbone="efficientnet-lite0", nshot=3, img_size=64, repeats=2, stream_queries=2, batch=2)
    result = run_benchmark(cfg)
    assert result["naive_masks_equal"] is True
    assert result["learnable_parameters"] == 2_572_770
    for key in ("episode", "naive_episode", "stream"):
        assert 0 < result[key]["min_s"] <= result[key]["median_s"] <= result[key]["max_s"]
    assert result["gflops_per_episode"] > 0 and result["matmul_peak_gflops_per_s"] > 0
    assert result["peak_memory_mb"] > 0
    assert abs(result["episodes_per_s"] * result["episode"]["median_s"] - 1) < 1e-9


def test_flop_count_scales_with_shots_like_the_pipeline():
    """K shots cost one query pass plus K support passes (+K input-masked passes for HM)."""
    from hmfss.evaluation.timing import count_flops

    model = build_model("hsnet", "efficientnet-lite0", "hm").eval()
    per_k = []
    for k in (1, 2):
        q, s, m = random_episode(BenchmarkConfig(nshot=k, img_size=64), torch.device("cpu"))
        with torch.inference_mode():
            per_k.append(count_flops(lambda: model.predict_mask(q, s, m)))
    backbone = count_flops(lambda: model.backbone(torch.zeros(1, 3, 64, 64)))
    # going from 1 to 2 shots adds two backbone passes (support + masked support) and one head run
    head = per_k[0] - 3 * backbone
    assert per_k[1] - per_k[0] == 2 * backbone + head


@pytest.mark.parametrize("side,pixels", [(1, 1), (2, 3), (3, 4), (8, 13)])
def test_random_support_masks_are_a_centred_disc_with_a_pixel_at_any_size(side, pixels):
    # centre (side/2, side/2), radius max(side/4, 1), counted by hand on the pixel grid: 8 px
    # gives the 13 points within 2 of (4, 4); 2 px: (0,1), (1,0), (1,1); 3 px: the 4 points
    # within 1 of (1.5, 1.5); 1 px: (0, 0), which the radius side/4 alone would miss
    _, _, masks = random_episode(BenchmarkConfig(nshot=2, batch=2, img_size=side), torch.device("cpu"))
    assert masks.shape == (2, 2, side, side)
    assert masks.sum(dim=(-2, -1)).eq(pixels).all()


def _centred_model(cfg: BenchmarkConfig):
    """A random HSNet-HM whose logit margin is centred on ``cfg``'s episode (a random head
    otherwise calls every pixel foreground, and every mask comparison would agree)."""
    torch.manual_seed(0)
    model = build_model("hsnet", cfg.backbone, "hm", img_size=cfg.img_size).eval()
    q, s, m = random_episode(cfg, torch.device("cpu"))
    last = [mod for mod in model.head.modules() if isinstance(mod, torch.nn.Conv2d)][-1]
    with torch.inference_mode():
        logits = model.lowres_logits(model.encode_query(q), model.encode_support(s, m))
        last.bias[1] -= (logits[:, :, 1] - logits[:, :, 0]).median()
    return model, (q, s, m)


def test_bf16_path_runs_and_reports_agreement():
    cfg = BenchmarkConfig(backbone="efficientnet-lite0", img_size=64, repeats=1, stream_queries=1, amp=True, naive=False)
    model, episode = _centred_model(cfg)
    with torch.inference_mode():
        fp32 = model.predict_mask(*episode)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model.predict_mask(*episode)
    result = run_benchmark(cfg, model)
    assert result["amp_mask_agreement"] == float((fp32 == bf16).float().mean())


def test_fast_selection_is_timed_and_compared_with_exact_selection():
    cfg = BenchmarkConfig(backbone="efficientnet-lite0", img_size=64, repeats=1, stream_queries=1, naive=False,
                          exact_selection=False)
    model, (q, s, m) = _centred_model(cfg)
    # a channels-last copy with other weights: the two selections then give visibly different masks
    other = fold_backbone(build_model("hsnet", "efficientnet-lite0", "hm").backbone)
    model.fast_path.folded_backbone = lambda backbone: other
    masks = {}
    with torch.inference_mode():
        for exact in (True, False):
            model.exact_selection = exact
            masks[exact] = model.predict_mask(q, s, m)
    expected = float((masks[True] == masks[False]).float().mean())
    assert expected < 0.99
    result = run_benchmark(cfg, model)
    assert model.exact_selection is False  # the timed runs keep the setting after the reference run
    assert result["config"]["exact_selection"] is False and "amp_mask_agreement" not in result
    assert result["fast_selection_mask_agreement"] == expected
    from hmfss.evaluation.benchmark import format_table

    assert "fast vs exact selection" in format_table(result)
    assert "fast_selection_mask_agreement" not in run_benchmark(BenchmarkConfig(
        backbone="efficientnet-lite0", img_size=64, repeats=1, stream_queries=1, naive=False))


def test_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["benchmark", "--backbone", "efficientnet-lite0", "--img-size", "64", "--repeats", "1",
                 "--stream-queries", "1", "--no-naive", "--fast-selection", "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["config"]["img_size"] == 64 and "episodes_per_s" in data
    assert data["config"]["exact_selection"] is False and "fast_selection_mask_agreement" in data
    assert "s / episode (median)" in capsys.readouterr().out
    assert main(["benchmark", "--nshot", "0"]) == 2


def test_matmul_peak_stays_within_its_time_budget_even_for_emulated_bf16():
    """bf16 on a CPU without native bf16 runs at ~2 GFLOP/s: a fixed 2048^2 product took
    minutes there; the bounded measurement stops growing n when the next size would not fit."""
    import time

    from hmfss.evaluation.timing import matmul_peak

    for dtype in (torch.float32, torch.bfloat16):
        start = time.perf_counter()
        rate = matmul_peak(torch.device("cpu"), dtype, budget_s=0.3)
        # at most the budget plus one product predicted to fit in it, plus allocation
        assert time.perf_counter() - start < 3.0
        assert rate > 0
