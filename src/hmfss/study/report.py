"""The study's report: figures and report.md from ``summary`` (:func:`hmfss.study.aggregate.summarise`
plus ``settings``, ``command``, ``machine`` and ``timing``). Every verdict sentence is computed from
the numbers: a paired difference is called a lead only when its 95% t-interval excludes 0."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from hmfss.atomic import atomic_write_text
from hmfss.evaluation.charts import bar_chart, line_chart, markdown_table, plus_minus
from hmfss.study.aggregate import paired, smallest_bucket
from hmfss.study.settings import NAMES, run_name

FEW_EPISODES = 20  # fewer test episodes than this in a bucket: its numbers are flagged as noisy


def short(variant: str) -> str:
    return variant.upper()


def verdict(d: Mapping[str, Any], a: str, b: str, unit: str, better: str = "better", digits: int = 2,
            higher_is_better: bool = True) -> str:
    """One sentence on a paired difference ``a - b`` (:func:`hmfss.study.aggregate.paired`, made
    with the same ``higher_is_better``)."""
    n = d["n"]
    if n == 0:
        return f"{a} − {b}: no seed where both are known."
    diff = f"{a} − {b} = {plus_minus(d, digits, signed=True)} {unit}"
    if n < 2:
        return f"{diff} (one seed: no spread, no verdict)."
    lo, hi = d["interval"]
    count = f"{a} {better} in {d['a_better']} of {n} seeds, {b} in {d['b_better']}" + (
        f", {d['ties']} tie(s)" if d.get("ties") else "")
    span = f"95% t-interval {lo:+.{digits}f} to {hi:+.{digits}f}"
    if lo <= 0 <= hi:
        return f"no clear difference: {diff} (mean ± sd over {n} seeds; {span} includes 0; {count})."
    lead = a if (d["mean"] > 0) == higher_is_better else b
    caution = " With this few seeds, read it as indicative." if n < 10 else ""
    return f"**{lead} ahead**: {diff} (mean ± sd over {n} seeds; {span} excludes 0; {count}).{caution}"


def _order(summary: Mapping[str, Any]) -> list[str]:
    """The compared variants, HM first."""
    rest = [v for v in summary["variants"] if v != summary["baseline"]]
    return sorted(rest, key=lambda v: (v != "hm", v != "im", rest.index(v)))


# ---- figures -------------------------------------------------------------------------------------


def draw_figures(out: Path, summary: Mapping[str, Any]) -> None:
    """figures/: validation mIoU and training loss over episodes (mean ± sd band), test mIoU by size."""
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    val = summary["validation"]
    n = len(summary["seeds"])
    for key, name, title, ylabel in (("curve", "val_curves.png", "Validation mIoU", "mIoU %"),
                                     ("loss", "train_loss.png", "Training loss (per epoch)", "loss")):
        series, bands = {}, {}
        for v in summary["variants"]:
            c = val[v][key]
            label = f"{NAMES[v]}"
            series[label] = (c["episodes"], c["mean"])
            sd = [x or 0.0 for x in c["sd"]]
            bands[label] = ([m - e for m, e in zip(c["mean"], sd)], [m + e for m, e in zip(c["mean"], sd)])
        line_chart(series, figures / name, f"{title}: mean ± sd over {n} seeds", "training episodes", ylabel,
                   size=(640, 380), bands=bands)
    for shots, block in summary["test"].items():
        first = block["variants"][summary["variants"][0]]["buckets"]
        groups = [f"fg {b['bucket']}" for b in first]
        series = {NAMES[v]: [b["mean"] for b in block["variants"][v]["buckets"]] for v in summary["variants"]}
        errors = {NAMES[v]: [b["sd"] for b in block["variants"][v]["buckets"]] for v in summary["variants"]}
        top = max([m + (e or 0.0) for name in series for m, e in zip(series[name], errors[name]) if m is not None],
                  default=0.0)
        bar_chart(groups, series, figures / f"size_buckets_{shots}.png",
                  f"Test mIoU by object size, {shots[0]}-shot (mean ± sd over {n} seeds)", "mIoU %",
                  size=(760, 400), y_max=max(top, 1.0), notes=[f"{b['episodes']} ep." for b in first], errors=errors)


# ---- report.md -----------------------------------------------------------------------------------


def write_report(path: Path, summary: Mapping[str, Any]) -> Path:
    return atomic_write_text(path, render_report(summary))


def render_report(summary: Mapping[str, Any]) -> str:
    s, base = summary["settings"], summary["baseline"]
    n = len(summary["seeds"])
    names = ", ".join(short(v) for v in summary["variants"])
    parts = [
        f"# hmfss study: HSNet {names} on the synthetic benchmark, {n} seeds\n",
        _setup(summary),
        "## Answers\n",
        _answers(summary),
        f"## Test mIoU (held-out classes, mean ± sd over {n} seeds, %)\n",
        _test_table(summary),
        f"## Paired differences to {short(base)} (same seed = same initial weights and episodes)\n",
        _paired_table(summary),
        "## By object size\n",
        "Test episodes are bucketed by the share of the query image the target covers; every run is tested on "
        "the same episodes, so the buckets hold the same episodes for every run.\n",
        *(_bucket_section(summary, shots) for shots in summary["test"]),
        "## Convergence\n",
        _convergence(summary),
        "## Every run\n",
        _runs_table(summary),
        _files(s),
    ]
    return "\n".join(parts) + "\n"


def _setup(summary: Mapping[str, Any]) -> str:
    s, m, timing = summary["settings"], summary["machine"], summary["timing"]
    episodes = s["epochs"] * s["episodes_per_epoch"]
    command = summary.get("command") or "(called as a library function)"
    return (
        f"Every model: HSNet head on a frozen EfficientNet-Lite0 (ImageNet weights), input {s['size']}x{s['size']}, "
        f"the demo's recipe and budget: {episodes} 1-shot training episodes ({s['epochs']} epochs x "
        f"{s['episodes_per_epoch']}, batch {s['bsz']}, Adam lr {s['lr']:g}), best checkpoint by validation mIoU "
        f"({s['val_episodes']} episodes on the validation classes, after every epoch). The benchmark is the demo's "
        f"({s['classes']} classes x {s['images_per_class']} images, data seed {s['data_seed']}), generated once. "
        f"Seeds {', '.join(str(x) for x in summary['seeds'])}: a seed sets the head's initial weights and the "
        f"training episodes, so the runs of one seed differ only in their masking. Test: the held-out classes, "
        f"{s['test_episodes']} 1-shot and {s['test_episodes_5shot']} 5-shot episodes, the same for every run.\n\n"
        f"Command: `{command}`\n\n"
        f"Machine: {m['cpu']} ({m['cores']} cores), {m['jobs']} process(es) x {m['threads_per_job']} torch "
        f"thread(s), torch {m['torch']}. Wall time of this invocation: {timing['wall_seconds'] / 60:.1f} min "
        f"({timing['runs_trained_now']} run(s) trained now); training + test time summed over all runs: "
        f"{sum(r['train'] + r['test'] for r in timing['run_seconds'].values()) / 60:.1f} min. "
        f"The same command on the same kind of machine (same threads) gives the same numbers.\n"
    )


def _answers(summary: Mapping[str, Any]) -> str:
    base = short(summary["baseline"])
    lines = []
    for v in _order(summary):
        lines.append(f"**Does {short(v)} beat {base} on the test classes?**\n")
        for shots, block in summary["test"].items():
            lines.append(f"* {shots[0]}-shot: " + verdict(block["paired"][v]["miou"], short(v), base, "mIoU"))
        lines.append("")
    lines.append(_small_answers(summary))
    lines.append(_speed_answers(summary))
    if "hm" in summary["variants"] and "im" in summary["variants"]:
        lines.append("**HM against IM** (per seed: (HM − FM) − (IM − FM))\n")
        for shots, block in summary["test"].items():
            d = paired(_seedwise(block["paired"]["hm"]["miou"]), _seedwise(block["paired"]["im"]["miou"]))
            lines.append(f"* {shots[0]}-shot: " + verdict(d, "HM", "IM", "mIoU"))
        lines.append("")
    return "\n".join(lines)


def _seedwise(d: Mapping[str, Any]) -> dict[int, float]:
    return {int(k): v for k, v in d["by_seed"].items()}


def _small_answers(summary: Mapping[str, Any]) -> str:
    base = short(summary["baseline"])
    lines = []
    for shots, block in summary["test"].items():
        b = smallest_bucket(block)
        if b is None:
            continue
        info = block["variants"][summary["baseline"]]["buckets"][b]
        note = (f" Only {info['episodes']} test episodes ({info['classes']} class(es)) fall in this bucket: "
                f"noisy." if info["episodes"] < FEW_EPISODES else "")
        lines.append(f"**Small objects** ({shots[0]}-shot, the smallest bucket with test episodes: fg "
                     f"{info['bucket']} of the image, {info['episodes']} episodes).{note}\n")
        for v in _order(summary):
            lines.append("* " + verdict(block["paired"][v]["buckets"][b], short(v), base, "mIoU"))
        lines.append("")
    return "\n".join(lines)


def _speed_answers(summary: Mapping[str, Any]) -> str:
    s, base = summary["settings"], summary["baseline"]
    val, pv = summary["validation"], summary["paired_validation"]
    lines = [f"**Does it converge faster?** Episodes until the validation mIoU first reaches a threshold (validation "
             f"after every epoch: a resolution of {s['episodes_per_epoch']} episodes; the paired difference counts "
             f"only the seeds where both runs reached it), and the mean validation mIoU over all epochs (the area "
             f"under the curve).\n"]
    for v in _order(summary):
        lines.append(f"* {short(v)} against {short(base)}:")
        for t, d in pv[v]["episodes_to"].items():
            reach = ", ".join(f"{short(x)} in {val[x]['episodes_to'][t]['reached']}/{val[x]['episodes_to'][t]['runs']}"
                              for x in (v, base))
            lines.append(f"  * val mIoU ≥ {t} (reached by {reach} runs): "
                         + verdict(d, short(v), short(base), "episodes", better="earlier", digits=0,
                                 higher_is_better=False))
        lines.append("  * mean validation mIoU over training: "
                     + verdict(pv[v]["mean_val_miou"], short(v), short(base), "mIoU"))
    return "\n".join(lines) + "\n"


def _test_table(summary: Mapping[str, Any]) -> str:
    rows = []
    for v in summary["variants"]:
        cells = [NAMES[v]]
        for block in summary["test"].values():
            cells += [plus_minus(block["variants"][v]["miou"]), plus_minus(block["variants"][v]["fb_iou"])]
        val = summary["validation"][v]
        rows.append(cells + [plus_minus(val["best"]), plus_minus(val["mean_val_miou"])])
    header = ["model"] + [f"{k[0]}-shot {m}" for k in summary["test"] for m in ("mIoU", "FB-IoU")]
    figure = "![validation curves](figures/val_curves.png) ![training loss](figures/train_loss.png)\n"
    return markdown_table(header + ["best val mIoU", "mean val mIoU"], rows) + "\n\n" + figure


def _interval(d: Mapping[str, Any]) -> str:
    return "n/a" if d["interval"] is None else f"{d['interval'][0]:+.2f} to {d['interval'][1]:+.2f}"


def _paired_table(summary: Mapping[str, Any]) -> str:
    base = short(summary["baseline"])
    rows = []
    for v in _order(summary):
        for shots, block in summary["test"].items():
            for metric in ("miou", "fb_iou"):
                d = block["paired"][v][metric]
                per_seed = ", ".join(f"{x:+.2f}" for x in d["by_seed"].values())
                rows.append([f"{short(v)} − {base}", f"{shots[0]}-shot {'mIoU' if metric == 'miou' else 'FB-IoU'}",
                             plus_minus(d, signed=True), _interval(d), f"{d['a_better']} / {d['n']}", per_seed])
    header = ["difference", "test", "mean ± sd", "95% t-interval", "seeds the variant leads", "by seed"]
    return markdown_table(header, rows) + "\n"


def _bucket_section(summary: Mapping[str, Any], shots: str) -> str:
    block, base = summary["test"][shots], short(summary["baseline"])
    first = block["variants"][summary["variants"][0]]["buckets"]
    rows = [[NAMES[v]] + [plus_minus(b) for b in block["variants"][v]["buckets"]] for v in summary["variants"]]
    for v in _order(summary):
        rows.append([f"{short(v)} − {base}"] + [f"{plus_minus(b, signed=True)} ({b['a_better']}/{b['n']})"
                                                for b in block["paired"][v]["buckets"]])
    rows.append(["test episodes (classes)"] + [f"{b['episodes']} ({b['classes']})" for b in first])
    table = markdown_table([f"{shots[0]}-shot"] + [f"fg {b['bucket']}" for b in first], rows)
    return (f"{table}\n\n(a difference row: mean ± sd over seeds (seeds where the variant is ahead / seeds))\n\n"
            f"![mIoU by object size, {shots[0]}-shot](figures/size_buckets_{shots}.png)\n")


def _convergence(summary: Mapping[str, Any]) -> str:
    val = summary["validation"]
    thresholds = list(next(iter(val.values()))["episodes_to"])
    rows = [[NAMES[v]] + [f"{plus_minus(val[v]['episodes_to'][t], 0)} ({val[v]['episodes_to'][t]['reached']}/"
                          f"{val[v]['episodes_to'][t]['runs']})" for t in thresholds] for v in summary["variants"]]
    table = markdown_table(["model"] + [f"episodes to val mIoU ≥ {t}" for t in thresholds], rows)
    return (f"{table}\n\n(mean ± sd over the runs that reached the threshold (runs that reached it / runs))\n\n"
            "![validation curves](figures/val_curves.png)\n")


def _runs_table(summary: Mapping[str, Any]) -> str:
    seconds = summary["timing"]["run_seconds"]
    rows = [[NAMES[r["variant"]], r["seed"], r["test_1shot_miou"], r["test_5shot_miou"],
             f"{r['best_val_miou']:.2f} (epoch {r['best_epoch']})",
             f"{seconds[run_name(r['variant'], r['seed'])]['train']:.0f}"] for r in summary["runs"]]
    return markdown_table(["model", "seed", "1-shot mIoU", "5-shot mIoU", "best val mIoU", "train s"], rows) + "\n"


def _files(s: Mapping[str, Any]) -> str:
    return ("## Files\n\n"
            "* `summary.json`: every number above; `findings` holds the few a report quotes\n"
            "* `runs/hsnet-<variant>-seed<seed>/`: each training run (config.yaml, log.txt, history, best.pt; "
            "last.pt is removed once the run is tested) and its `result.json`\n"
            "* `data/`: the benchmark; `study.json`: the settings this folder's runs share\n")
