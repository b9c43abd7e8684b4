"""The demo's report quotes the committed study: the copy in hmfss.demo.evidence agrees with
docs/study/<size>px/summary.json, and the section places the demo's own run against the
study's seed-to-seed spread."""

import json
from pathlib import Path

import pytest

from hmfss.demo import evidence, report

DOCS = Path(__file__).resolve().parents[2] / "docs" / "study"


def test_quoted_findings_are_the_committed_ones():
    committed = {int(p.parent.name.removesuffix("px")): json.loads(p.read_text())["findings"]
                 for p in sorted(DOCS.glob("*px/summary.json"))}
    assert 96 in committed and len(committed) >= 2  # the demo's size and a larger one
    assert json.loads(json.dumps(evidence.STUDY_FINDINGS)) == {str(k): v for k, v in committed.items()}
    assert (DOCS / "README.md").is_file() and evidence.STUDY_REPORT == "docs/study/README.md"


def _diff(mean, sd, n=3, a_better=2):
    return {"mean": mean, "sd": sd, "n": n, "interval": [mean - 5, mean + 5], "a_better": a_better,
            "b_better": n - a_better}


FINDINGS = {96: {
    "1shot": {"minus_fm": {"hm": _diff(-1.5, 2.0), "im": _diff(-3.0, 1.0, a_better=0)},
              "small_objects": {"bucket": "<1%", "episodes": 12, "minus_fm": {"hm": _diff(-4.0, 6.0, a_better=1)}}},
    "5shot": {"minus_fm": {"hm": _diff(0.5, 1.0), "im": _diff(-2.0, 1.0, a_better=1)}},
}}


def test_section_quotes_the_study_and_places_this_run_in_its_spread(monkeypatch):
    monkeypatch.setattr(report, "STUDY_FINDINGS", FINDINGS)
    # 1-shot: -4.0 is 1.25 sd from -1.5 (sd 2.0): within; 5-shot: +3.0 is 2.5 sd from +0.5 (sd 1.0): outside
    text = report.study_section({1: -4.0, 5: 3.0}, 96, 2400)
    assert "| 96 px | 1-shot | -1.50 ± 2.00 | 2 of 3 | -3.00 ± 1.00 | -4.00 ± 6.00 (<1%) |" in text
    assert "| 96 px | 5-shot | +0.50 ± 1.00 | 2 of 3 | -2.00 ± 1.00 | n/a |" in text
    assert "HM − FM 1-shot, -4.00, is within two seed-to-seed standard deviations" in text
    assert "HM − FM 5-shot, +3.00, is more than two seed-to-seed standard deviations" in text
    # a demo at a size the study did not run: the table, no placement
    assert "This run's" not in report.study_section({1: 0.0, 5: 0.0}, 128, 2400)
    # a demo whose speed check lowered the budget: not comparable
    assert "not comparable" in report.study_section({1: 0.0, 5: 0.0}, 96, 1600)


def test_without_a_study_the_section_says_one_run_cannot_tell(monkeypatch):
    monkeypatch.setattr(report, "STUDY_FINDINGS", {})
    assert "run-to-run variance" in report.study_section({1: 1.0, 5: 1.0}, 96, 2400)
