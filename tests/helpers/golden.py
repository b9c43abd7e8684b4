"""Stored logits of every head x masking (and every backbone with HSNet-HM) on fixed inputs.

Weights are set by parameter *name* (not by construction order), so a refactor that builds
modules in another order still gets the same weights. ``python tests/helpers/golden.py``
rewrites ``tests/golden/logits.json``: do that only when a change of the numbers is
intended, and say why in the commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zlib
from pathlib import Path

import torch

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "logits.json"
MASKINGS = ("none", "fm", "im", "hm", "hm-add", "hm-reverse")
SIZES = {"hsnet": 64, "vat": 64, "asnet": 257}


def cases() -> list[tuple[str, str, str]]:
    """(arch, backbone, masking): HSNet with every masking, ASNet and VAT with the maskings
    that take distinct code paths, every backbone with HSNet-HM (VAT is slow on a CPU)."""
    out = [("hsnet", "resnet50", m) for m in MASKINGS]
    out += [("asnet", "resnet50", m) for m in ("none", "fm", "hm")]
    out += [("vat", "resnet50", m) for m in ("fm", "hm")]  # the two places VAT masks at
    out += [("hsnet", b, "hm") for b in ("resnet101", "vgg16", "efficientnet-lite0")]
    return out


def init_by_name(model: torch.nn.Module) -> None:
    """Deterministic weights from each tensor's name: N(0, 1/fan_in) for weights, positive
    BatchNorm scales and variances, small biases and means."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_var":
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif t.dim() == 1 and leaf == "weight":
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif t.dim() <= 1:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
            else:
                fan_in = max(1, t[0].numel())
                t.copy_(torch.randn(t.shape, generator=gen) / fan_in ** 0.5)


def episode(size: int, shots: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One query (1,3,S,S), K supports (1,K,3,S,S) and masks (1,K,S,S) with objects of two sizes."""
    gen = torch.Generator().manual_seed(7)
    query = torch.randn(1, 3, size, size, generator=gen)
    supports = torch.randn(1, shots, 3, size, size, generator=gen)
    masks = torch.zeros(1, shots, size, size)
    masks[0, 0, size // 4: size // 2, size // 4: 3 * size // 4] = 1
    masks[0, 1, 2: size // 6 + 3, size // 2: size // 2 + size // 6] = 1
    return query, supports, masks


def compute(arch: str, backbone: str, masking: str) -> dict[str, torch.Tensor]:
    """Logits of the 1-shot forward and (not VAT: slow) the 2-shot masks of predict_mask."""
    from hmfss import build_model

    model = build_model(arch, backbone, masking).eval()
    init_by_name(model)
    q, s, m = episode(SIZES[arch])
    with torch.no_grad():
        out = {"logits": model(q, s[:, 0], m[:, 0])}
        if arch != "vat":
            out["mask"] = model.predict_mask(q, s, m)
    return out


def fingerprint(t: torch.Tensor) -> dict:
    """sha256 of the bytes (bit-for-bit check) and a strided sample (tolerance check)."""
    flat = t.detach().contiguous().flatten()
    step = max(1, flat.numel() // 128)
    return {"sha256": hashlib.sha256(flat.numpy().tobytes()).hexdigest(), "shape": list(t.shape),
            "sample": flat[::step].tolist(), "step": step}


def key(case: tuple[str, str, str]) -> str:
    return "/".join(case)


def main() -> None:
    torch.set_num_threads(2)
    out = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__, "cases": {}}
    for case in cases():
        result = compute(*case)
        out["cases"][key(case)] = {name: fingerprint(t) for name, t in result.items()}
        print(key(case), flush=True, file=sys.stderr)
    GOLDEN.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
