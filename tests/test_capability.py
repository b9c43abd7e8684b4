"""bf16 support: the note that says when --amp is emulated (slower) on this CPU."""

import pytest
import torch

from hmfss import capability
from hmfss.cli.main import main


def test_cpu_bf16_nativeness_follows_onednn():
    assert capability.bf16_is_native("cpu") == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@pytest.mark.parametrize("native", [True, False])
def test_benchmark_amp_says_when_bf16_is_emulated(native, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(capability, "bf16_is_native", lambda device: native)
    monkeypatch.setattr("hmfss.evaluation.benchmark.bf16_is_native", lambda device: native)
    code = main(["benchmark", "--backbone", "efficientnet-lite0", "--img-size", "32", "--repeats", "1",
                 "--warmup", "0", "--stream-queries", "1", "--no-naive", "--amp", "--threads", "1",
                 "--json", str(tmp_path / "b.json")])
    out, err = capsys.readouterr()
    assert code == 0
    assert ("emulated" in err.lower()) is (not native)
    assert ("EMULATED" in out) is (not native)
    import json

    assert json.loads((tmp_path / "b.json").read_text())["bf16_native"] is native


def test_no_note_without_amp(monkeypatch, capsys):
    monkeypatch.setattr(capability, "bf16_is_native", lambda device: False)
    assert main(["benchmark", "--backbone", "efficientnet-lite0", "--img-size", "32", "--repeats", "1",
                 "--warmup", "0", "--stream-queries", "1", "--no-naive", "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    assert "emulated" not in (out + err).lower()
