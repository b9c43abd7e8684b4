"""Checkpoints: hmfss's own format and the original HSNet / VAT / ASNet (and HM) files.

hmfss checkpoints are a dict ``{"format": "hmfss", "version": 1, "config": ModelConfig dict,
"model": state_dict, ...extra}`` written atomically (temp file + rename). Original checkpoints
are plain ``module.``-prefixed state_dicts (HSNet) or dicts with a ``state_dict`` entry:
VAT's ``{epoch, state_dict, optimizer, scheduler, val_miou}`` and ASNet's
PyTorch-Lightning 1.3 ``.ckpt`` files, whose pickled callback / argument objects become
inert placeholders. Each head maps its original key names (``Head.convert_original_state``).
Nothing is ever unpickled beyond tensors and plain containers. Formats and key conversion
rules: docs/checkpoints.md.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hmfss.atomic import atomic_save
from hmfss.errors import HmfssError
from hmfss.weights import load_restricted, load_state

FORMAT = "hmfss"
VERSION = 1


def save_checkpoint(model: nn.Module, path: str | Path, **extra: Any) -> Path:
    """Write ``model`` (its config and full state_dict, on CPU) plus ``extra`` entries."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), "model": state}
    payload.update(extra)
    return atomic_save(payload, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file onto the CPU without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise HmfssError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        try:
            obj = load_restricted(path)
        except HmfssError:
            raise
        except Exception:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise HmfssError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(obj, dict):
        raise HmfssError(f"checkpoint {path} is not a state_dict or an hmfss checkpoint")
    return obj


def checkpoint_state(obj: dict[str, Any], path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """(state_dict, hmfss config or None) of a loaded checkpoint object."""
    if obj.get("format") == FORMAT:
        return obj["model"], obj.get("config")
    if isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    state = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise HmfssError(f"checkpoint {path} holds no tensors")
    return state, None


def convert_original_keys(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map original key names onto ours: strip ``module.``, rename the learner prefix, drop
    the unused classifier keys of the backbone."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    ignored = tuple(f"backbone.{p}" for p in model.backbone.ignored_keys)
    prefix = model.head.original_prefix
    out: dict[str, Tensor] = {}
    head_state: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(ignored):
            continue
        if prefix and key.startswith(prefix):
            head_state[key[len(prefix):]] = value
        else:
            out[key] = value
    for key, value in model.head.convert_original_state(head_state).items():
        out[f"head.{key}"] = value
    return out


def load_checkpoint(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load an hmfss or original (HSNet / VAT / ASNet, with or without HM) checkpoint into
    ``model``, strictly.

    Returns the checkpoint object (for hmfss checkpoints: config and any extra entries).
    """
    obj = read_checkpoint(path)
    apply_checkpoint(model, obj, path)
    return obj


def apply_checkpoint(model: nn.Module, obj: dict[str, Any], path: str | Path) -> None:
    """Load an already-read checkpoint object into ``model`` (see :func:`load_checkpoint`)."""
    state, config = checkpoint_state(obj, path)
    if config is not None:
        cfg = model.config
        for name in ("arch", "backbone"):
            if config.get(name) != getattr(cfg, name):
                raise HmfssError(
                    f"checkpoint {path} is a {config.get('arch')}/{config.get('backbone')} model, "
                    f"not {cfg.arch}/{cfg.backbone}"
                )
        if config.get("masking") != cfg.masking:
            warnings.warn(
                f"checkpoint {path} was trained with masking {config.get('masking')!r}; "
                f"using {cfg.masking!r}",
                stacklevel=2,
            )
    else:
        state = convert_original_keys(model, state)
    device = next(model.parameters()).device
    load_state(model, {k: v.to(device) for k, v in state.items()}, path)


def load_model(
    path: str | Path,
    arch: str | None = None,
    backbone: str | None = None,
    masking: str | None = None,
    img_size: int | None = None,
    device: str | torch.device = "cpu",
    benchmark: str | None = None,
    **options: Any,
):
    """Build the model a checkpoint describes and load it.

    hmfss checkpoints carry their config (arguments given here override it); original
    checkpoints need ``arch`` and ``backbone`` (masking defaults to "hm"). ``benchmark``
    (the data the model is used on) supplies the head's data-dependent options (VAT's
    ``benchmark``) where neither the checkpoint nor ``options`` give them.
    """
    from hmfss.heads import HEADS
    from hmfss.model import build_model

    obj = read_checkpoint(path)
    _, config = checkpoint_state(obj, path)
    config = dict(config or {})
    arch = arch or config.get("arch")
    backbone = backbone or config.get("backbone")
    if arch is None or backbone is None:
        raise HmfssError(
            f"checkpoint {path} is not an hmfss checkpoint: give the architecture and backbone "
            f"(--arch, --backbone)"
        )
    defaults = HEADS[arch].benchmark_options(benchmark) if benchmark is not None and arch in HEADS else {}
    merged = {**defaults, **config.get("options", {}), **options}
    model = build_model(
        arch,
        backbone,
        masking or config.get("masking") or "hm",
        img_size=img_size or config.get("img_size"),
        **merged,
    )
    model.to(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        apply_checkpoint(model, obj, path)
    model.eval()
    return model
