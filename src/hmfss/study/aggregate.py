"""The study's statistics: pure functions of per-run numbers (no files, no torch).

Every spread is over seeds: ``sd`` is the sample standard deviation (n - 1), None below two
values. A paired comparison takes, seed by seed, the difference of two variants trained from the
same initial weights on the same episodes, so that what the seeds share cancels out; its
``interval`` is the two-sided 95% t-interval of the mean difference.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

# two-sided 95% quantiles of Student's t by degrees of freedom (1-10); above: an expansion in 1/dof
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)
_Z95 = 1.959964


def t95(dof: int) -> float:
    """The 0.975 quantile of Student's t with ``dof`` degrees of freedom (dof >= 1)."""
    if dof <= len(_T95):
        return _T95[dof - 1]
    z = _Z95
    return z + (z ** 3 + z) / (4 * dof) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * dof ** 2)


def mean_sd(values: Sequence[float | None]) -> dict[str, Any]:
    """``mean``, sample ``sd`` (None below 2 values) and ``n`` of the values that are not None."""
    vals = [float(v) for v in values if v is not None]
    n = len(vals)
    if not n:
        return {"mean": None, "sd": None, "n": 0}
    mean = sum(vals) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else None
    return {"mean": mean, "sd": sd, "n": n}


def paired(a: Mapping[int, float | None], b: Mapping[int, float | None],
           higher_is_better: bool = True) -> dict[str, Any]:
    """Seed-by-seed differences ``a - b`` over the seeds where both are known: mean, sd, n, the 95%
    t-interval of the mean (None below 2 seeds), how many seeds favour ``a`` (``a_better``), ``b``
    and neither (``ties``), and the differences by seed (``by_seed``, keys as strings for JSON)."""
    seeds = sorted(s for s in a if s in b and a[s] is not None and b[s] is not None)
    diffs = {s: float(a[s]) - float(b[s]) for s in seeds}
    stats = mean_sd(list(diffs.values()))
    sign = 1.0 if higher_is_better else -1.0
    interval = None
    if stats["sd"] is not None:
        half = t95(stats["n"] - 1) * stats["sd"] / math.sqrt(stats["n"])
        interval = [stats["mean"] - half, stats["mean"] + half]
    return {**stats, "interval": interval,
            "a_better": sum(1 for d in diffs.values() if sign * d > 0),
            "b_better": sum(1 for d in diffs.values() if sign * d < 0),
            "ties": sum(1 for d in diffs.values() if d == 0),
            "by_seed": {str(s): d for s, d in diffs.items()}}


def episodes_to_threshold(episodes: Sequence[int], val_miou: Sequence[float], threshold: float) -> int | None:
    """Training episodes at the first validation whose mIoU reaches ``threshold``; None if none does."""
    for count, value in zip(episodes, val_miou):
        if value is not None and value >= threshold:
            return int(count)
    return None


def cumulative_episodes(history: Sequence[Mapping[str, Any]]) -> list[int]:
    """Training episodes seen by the end of each epoch of a run's history (rows with ``episodes``)."""
    total, out = 0, []
    for row in history:
        total += int(row["episodes"])
        out.append(total)
    return out


def mean_curve(curves: Sequence[tuple[Sequence[int], Sequence[float]]]) -> dict[str, list]:
    """Mean and sd of curves sampled at the same x (the first curve's; all must share them)."""
    if not curves:
        return {"episodes": [], "mean": [], "sd": []}
    xs = list(curves[0][0])
    for other, _ in curves[1:]:
        if list(other) != xs:
            raise ValueError("curves of a variant must share their validation points")
    columns = [mean_sd([ys[i] for _, ys in curves]) for i in range(len(xs))]
    return {"episodes": xs, "mean": [c["mean"] for c in columns], "sd": [c["sd"] for c in columns]}


def convergence(curves: Mapping[int, tuple[Sequence[int], Sequence[float]]], threshold: float) -> dict[str, Any]:
    """Episodes to ``threshold`` of every seed (None: never reached), their mean ± sd over the runs
    that reached it, and ``reached`` / ``runs``."""
    by_seed = {s: episodes_to_threshold(xs, ys, threshold) for s, (xs, ys) in sorted(curves.items())}
    stats = mean_sd(list(by_seed.values()))
    return {"mean": stats["mean"], "sd": stats["sd"], "reached": stats["n"], "runs": len(by_seed),
            "by_seed": {str(s): v for s, v in by_seed.items()}}


def by_seed(results: Mapping[tuple[str, int], Mapping[str, Any]], variant: str, pick) -> dict[int, Any]:
    """{seed: pick(result)} of one variant's runs."""
    return {seed: pick(r) for (v, seed), r in sorted(results.items()) if v == variant}


# ---- the summary of a study ----------------------------------------------------------------------

Results = Mapping[tuple[str, int], Mapping[str, Any]]  # (variant, seed) -> a run's result.json


def _test_block(results: Results, variants: Sequence[str], baseline: str, key: str) -> dict[str, Any]:
    """Mean ± sd by variant and paired differences to ``baseline`` of one test setting (overall, by bucket)."""
    some = next(iter(results.values()))[key]["buckets"]
    labels = [b["bucket"] for b in some]

    def pick(variant: str, metric: str, bucket: int | None = None) -> dict[int, Any]:
        if bucket is None:
            return by_seed(results, variant, lambda r: r[key][metric])
        return by_seed(results, variant, lambda r: r[key]["buckets"][bucket]["miou"])

    per_variant = {v: {"miou": mean_sd(list(pick(v, "miou").values())),
                       "fb_iou": mean_sd(list(pick(v, "fb_iou").values())),
                       "buckets": [{"bucket": label, "episodes": some[b]["episodes"], "classes": some[b]["classes"],
                                    **mean_sd(list(pick(v, "miou", b).values()))} for b, label in enumerate(labels)]}
                   for v in variants}
    diffs = {v: {"miou": paired(pick(v, "miou"), pick(baseline, "miou")),
                 "fb_iou": paired(pick(v, "fb_iou"), pick(baseline, "fb_iou")),
                 "buckets": [{"bucket": label, **paired(pick(v, "miou", b), pick(baseline, "miou", b))}
                             for b, label in enumerate(labels)]}
             for v in variants if v != baseline}
    return {"variants": per_variant, "paired": diffs}


def _validation_block(results: Results, variants: Sequence[str], baseline: str,
                      thresholds: Sequence[float]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per variant: best validation mIoU, mean curves, episodes to each threshold; and the paired
    differences to ``baseline`` (mean validation mIoU over training, episodes to each threshold)."""
    curves = {v: by_seed(results, v, lambda r: (r["curve"]["episodes"], r["curve"]["val_miou"])) for v in variants}
    losses = {v: by_seed(results, v, lambda r: (r["curve"]["episodes"], r["curve"]["train_loss"])) for v in variants}
    area = {v: {s: sum(ys) / len(ys) for s, (_, ys) in curves[v].items()} for v in variants}
    reach = {v: {f"{t:g}": convergence(curves[v], t) for t in thresholds} for v in variants}
    per_variant = {v: {"best": mean_sd(list(by_seed(results, v, lambda r: r["best_val_miou"]).values())),
                       "curve": mean_curve(list(curves[v].values())), "loss": mean_curve(list(losses[v].values())),
                       "mean_val_miou": mean_sd(list(area[v].values())), "episodes_to": reach[v]}
                   for v in variants}

    def steps(v: str, t: str) -> dict[int, Any]:
        return {int(s): e for s, e in reach[v][t]["by_seed"].items()}

    diffs = {v: {"mean_val_miou": paired(area[v], area[baseline]),
                 "episodes_to": {t: paired(steps(v, t), steps(baseline, t), higher_is_better=False)
                                 for t in reach[v]}}
             for v in variants if v != baseline}
    return per_variant, diffs


def smallest_bucket(block: Mapping[str, Any]) -> int | None:
    """Index of the smallest object-size bucket that holds test episodes (None: none does)."""
    some = next(iter(block["variants"].values()))["buckets"]
    return next((b for b, entry in enumerate(some) if entry["episodes"]), None)


def _brief(stats: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("mean", "sd", "n", "interval", "a_better", "b_better", "reached", "runs")
    return {k: stats[k] for k in keep if k in stats}


def findings(summary: Mapping[str, Any], baseline: str) -> dict[str, Any]:
    """The few numbers another report quotes: per shot, mIoU mean ± sd by variant, variant - baseline
    (overall and on the smallest objects), and episodes to each validation threshold."""
    out: dict[str, Any] = {"seeds": summary["seeds"], "baseline": baseline}
    for shots, block in summary["test"].items():
        small = smallest_bucket(block)
        entry = {"miou": {v: [b["miou"]["mean"], b["miou"]["sd"]] for v, b in block["variants"].items()},
                 f"minus_{baseline}": {v: _brief(d["miou"]) for v, d in block["paired"].items()}}
        if small is not None:
            first = next(iter(block["variants"].values()))["buckets"][small]
            entry["small_objects"] = {"bucket": first["bucket"], "episodes": first["episodes"],
                                      f"minus_{baseline}": {v: _brief(d["buckets"][small])
                                                            for v, d in block["paired"].items()}}
        out[shots] = entry
    out["episodes_to_val_miou"] = {t: {v: _brief(val["episodes_to"][t]) for v, val in summary["validation"].items()}
                                   for t in next(iter(summary["validation"].values()))["episodes_to"]}
    return out


def summarise(results: Results, variants: Sequence[str], seeds: Sequence[int], thresholds: Sequence[float],
              baseline: str = "fm", shots: Sequence[int] = (1, 5)) -> dict[str, Any]:
    """Everything the report shows, from the results of every (variant, seed) of the study."""
    missing = [(v, s) for v in variants for s in seeds if (v, s) not in results]
    if missing:
        raise ValueError(f"no result for {missing[0]}")
    results = {(v, s): results[(v, s)] for v in variants for s in seeds}
    summary: dict[str, Any] = {"variants": list(variants), "seeds": list(seeds), "baseline": baseline,
                               "test": {f"{k}shot": _test_block(results, variants, baseline, f"test_{k}shot")
                                        for k in shots}}
    summary["validation"], summary["paired_validation"] = _validation_block(results, variants, baseline, thresholds)
    summary["findings"] = findings(summary, baseline)
    summary["runs"] = [{"variant": v, "seed": s, "best_val_miou": r["best_val_miou"], "best_epoch": r["best_epoch"],
                        **{f"test_{k}shot_miou": r[f"test_{k}shot"]["miou"] for k in shots}}
                       for (v, s), r in results.items()]
    return summary
