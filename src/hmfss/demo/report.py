"""The demo's report: figures (evaluation/charts.py) and report.md, from the results dictionary.

``results`` (also written as results.json) holds ``settings`` (the planned DemoSettings as a
dict), ``benchmark`` (class counts per split), ``models`` (per masking: checkpoint, training
history, best validation score, test figures per shot count), and, once known, ``stage_seconds``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hmfss.atomic import atomic_write_text
from hmfss.data.episodes import Episode
from hmfss.demo.evidence import STUDY_FINDINGS, STUDY_REPORT
from hmfss.demo.examples import choose_examples, example_panels
from hmfss.demo.settings import MASKINGS, NAMES, DemoSettings
from hmfss.evaluation.charts import bar_chart, line_chart, markdown_table, plus_minus
from hmfss.evaluation.metrics import BUCKETS

TEMPLATE = """\
# hmfss demo: HSNet-FM vs HSNet-HM on the synthetic benchmark

Both models: HSNet head on a frozen EfficientNet-Lite0 (ImageNet weights), input {size}x{size},
trained from the same initial weights on the same {episodes} 1-shot training episodes
({epochs} epochs x {episodes_per_epoch}, batch {bsz}, Adam lr {lr}, plain 2-class
cross-entropy). The only difference is the support masking: **FM** multiplies the support features by the
mask, **HM** (hybrid masking) fills FM's inactive values with the features of the masked support image.{budget_note}
The best checkpoint by validation mIoU ({val_episodes} episodes on {val_classes} validation classes) is
evaluated on **{test_classes} test classes never seen in training** ({test_episodes} 1-shot and
{test_episodes_5shot} 5-shot episodes, seeded, the same episodes for both models). Total wall time: {total}.

## Results (mIoU / FB-IoU in %, test classes)

{results_table}

HM - FM: **{gain_1shot}** mIoU 1-shot, **{gain_5shot}** mIoU 5-shot, from one run per model. This is a tiny
training budget ({episodes} episodes; the paper trains for hundreds of epochs on real data), so read it as an
illustration of the pipeline, not as a replication of the paper's numbers. Train longer with `hmfss train` (see
`runs/*/config.yaml`).

{study_section}
## mIoU by object size

Episodes are bucketed by the share of the query image covered by the target (the paper's claim is that HM
helps most on small objects):

{bucket_table}

![mIoU by object size](figures/size_buckets.png)

## Training curves

![training loss](figures/loss.png) ![validation mIoU](figures/val_miou.png)

## Examples (test classes, 1-shot)

Yellow: support mask; green: query ground truth; red: prediction (outlined). The first rows are the smallest targets.

![examples](figures/examples.png)

## Files

* `{ckpt_fm}`, `{ckpt_hm}`: checkpoints for `hmfss predict` / `hmfss test`, e.g.

      hmfss predict --checkpoint {ckpt_hm} --support data/FSS-1000/{cls}/1.jpg data/FSS-1000/{cls}/1.png \\
          --query data/FSS-1000/{cls}/2.jpg --out predictions

* `runs/hsnet-fm/`, `runs/hsnet-hm/`: training runs (config.yaml, log.txt, history.jsonl/csv, best.pt, last.pt)
* `data/`: the benchmark (`hmfss data synthetic` layout; split lists in `data/splits/fss/`)
* `results.json`: every figure above; stage times: {stage_times}
"""


# ---- figures -------------------------------------------------------------------------------------


def draw_figures(out: Path, s: DemoSettings, results: dict[str, Any], episodes: list[Episode],
                 meta: dict[str, Any]) -> None:
    """figures/: training curves, test mIoU by object size, example panels."""
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    models = results["models"]
    line_chart(_curves(models, "train_loss", "train loss"), figures / "loss.png",
               "Training loss (2-class cross-entropy)", "epoch", "loss")
    line_chart(_curves(models, "val_miou", "val mIoU"), figures / "val_miou.png",
               "Validation mIoU (val classes, 1-shot)", "epoch", "mIoU %")
    series = {f"{NAMES[m]} {shots}-shot": [b["miou"] for b in models[m][f"test_{shots}shot"]["buckets"]]
              for shots in (1, 5) for m in models}
    notes = [f"{b['episodes']} ep." for b in models["fm"]["test_1shot"]["buckets"]]
    bar_chart([f"fg {b[0]}" for b in BUCKETS], series, figures / "size_buckets.png",
              "Test mIoU by object size (share of the query image)", "mIoU %", size=(760, 400), notes=notes)
    checkpoints = {m: out / models[m]["checkpoint"] for m in MASKINGS}
    example_panels(out, checkpoints, choose_examples(episodes, meta, s.examples), s.size)


def _curves(models: dict[str, Any], key: str, label: str) -> dict[str, tuple[list, list]]:
    return {f"{NAMES[m]} {label}": ([r["epoch"] for r in models[m]["history"]], [r[key] for r in models[m]["history"]])
            for m in models}


# ---- report.md -----------------------------------------------------------------------------------


def write_report(path: Path, results: dict[str, Any]) -> Path:
    """(Re)write report.md from ``results`` (stage times are filled in when known)."""
    return atomic_write_text(path, render_report(results))


def render_report(results: dict[str, Any]) -> str:
    s, models, counts = results["settings"], results["models"], results["benchmark"]
    stages = results.get("stage_seconds", {})
    return TEMPLATE.format(
        size=s["size"], episodes=s["episodes_per_epoch"] * s["epochs"], epochs=s["epochs"],
        episodes_per_epoch=s["episodes_per_epoch"], bsz=s["bsz"], lr=f"{s['lr']:g}",
        budget_note=_budget_note(results), val_episodes=s["val_episodes"], val_classes=counts["val"],
        test_classes=counts["test"], test_episodes=s["test_episodes"], test_episodes_5shot=s["test_episodes_5shot"],
        total=f"{stages['total'] / 60:.1f} min" if "total" in stages else "(running)",
        results_table=_results_table(models), bucket_table=_bucket_table(models),
        gain_1shot=f"{_gain(models, 1):+.2f}", gain_5shot=f"{_gain(models, 5):+.2f}",
        study_section=study_section({k: _gain(models, k) for k in (1, 5)}, s["size"], s["episodes_per_epoch"] * s["epochs"]),
        ckpt_fm=models["fm"]["checkpoint"], ckpt_hm=models["hm"]["checkpoint"],
        cls=results.get("example_class", "<class>"),
        stage_times=", ".join(f"{k} {v:.0f}s" for k, v in stages.items()),
    )


def _budget_note(results: dict[str, Any]) -> str:
    planned = results["settings"]["episodes_per_epoch"]
    nominal = results.get("nominal_episodes_per_epoch", planned)
    if nominal == planned:
        return ""
    return (f" The speed check lowered the budget from {nominal} to {planned} episodes per epoch to finish "
            f"in time on this machine.")


def _gain(models: dict[str, Any], shots: int) -> float:
    """HM's test mIoU minus FM's."""
    return models["hm"][f"test_{shots}shot"]["miou"] - models["fm"][f"test_{shots}shot"]["miou"]


def _results_table(models: dict[str, Any]) -> str:
    rows = []
    for m in MASKINGS:
        r = models[m]
        eps = [h["episodes_per_s"] for h in r["history"]]
        rows.append([NAMES[m], r["test_1shot"]["miou"], r["test_1shot"]["fb_iou"], r["test_5shot"]["miou"],
                     r["test_5shot"]["fb_iou"], f"{r['best_val_miou']:.2f} (epoch {r['best_epoch']})",
                     f"{r['train_seconds']:.0f}", f"{sum(eps) / max(len(eps), 1):.1f}"])
    header = ["model", "1-shot mIoU", "1-shot FB-IoU", "5-shot mIoU", "5-shot FB-IoU", "best val mIoU", "train s",
              "train episodes/s"]
    return markdown_table(header, rows)


def _bucket_table(models: dict[str, Any]) -> str:
    rows = [[f"{NAMES[m]} {shots}-shot"] + [b["miou"] for b in models[m][f"test_{shots}shot"]["buckets"]]
            for shots in (1, 5) for m in MASKINGS]
    rows.append(["test episodes"] + [b["episodes"] for b in models["fm"]["test_1shot"]["buckets"]])
    return markdown_table(["model"] + [f"fg {b[0]}" for b in BUCKETS], rows)


# ---- what the seeded study found -------------------------------------------------------------------


def _study_rows() -> list[list[Any]]:
    rows = []
    for size, f in sorted(STUDY_FINDINGS.items()):
        for shots in (1, 5):
            entry = f[f"{shots}shot"]
            hm, im = entry["minus_fm"]["hm"], entry["minus_fm"].get("im")
            small = entry.get("small_objects", {}).get("minus_fm", {}).get("hm")
            rows.append([f"{size} px", f"{shots}-shot", plus_minus(hm, signed=True), f"{hm['a_better']} of {hm['n']}",
                         plus_minus(im, signed=True) if im else "n/a",
                         f"{plus_minus(small, signed=True)} ({entry['small_objects']['bucket']})" if small else "n/a"])
    return rows


def study_section(gains: dict[int, float], size: int, episodes: int) -> str:
    """The study's paired HM - FM (and IM - FM) differences over seeds, and where this run's own
    difference lies against their seed-to-seed spread (when this run had the study's size and
    budget: the demo's nominal one)."""
    if not STUDY_FINDINGS:
        return ("One short run per model says nothing about run-to-run variance: a seeded comparison "
                "(`hmfss study`) tells an effect from noise.")
    header = ["study", "shots", "HM − FM mIoU (mean ± sd over seeds)", "HM better in", "IM − FM",
              "HM − FM, smallest objects"]
    lines = ["## What a seeded study found", "",
             "One run per model cannot tell an effect from run-to-run noise. `hmfss study` trained HSNet-FM, -IM "
             "and -HM on this benchmark at this budget with several seeds (each seed: the same initial weights "
             f"and training episodes for every variant) and paired the results seed by seed ({STUDY_REPORT} in "
             "the hmfss repository has the full report and the command):", "",
             markdown_table(header, _study_rows()), ""]
    near = STUDY_FINDINGS.get(size)
    nominal = DemoSettings.epochs * DemoSettings.episodes_per_epoch
    if near is None:
        return "\n".join(lines)
    if episodes != nominal:
        lines.append(f"This run trained {episodes} episodes, the study's runs {nominal}: its difference is not "
                     "comparable with the study's spread.")
        return "\n".join(lines)
    for shots in (1, 5):
        d = near[f"{shots}shot"]["minus_fm"]["hm"]
        if d.get("sd") is None:
            continue
        distance = abs(gains[shots] - d["mean"]) / d["sd"] if d["sd"] > 0 else float("inf")
        where = ("within two seed-to-seed standard deviations of the study's mean: what seed noise alone gives"
                 if distance <= 2 else "more than two seed-to-seed standard deviations from the study's mean")
        lines.append(f"This run's HM − FM {shots}-shot, {gains[shots]:+.2f}, is {where} "
                     f"({plus_minus(d, signed=True)} over {d['n']} seeds at {size} px).")
    return "\n".join(lines)
