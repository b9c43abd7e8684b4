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
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hmfss.atomic import atomic_save
from hmfss.errors import HmfssError
from hmfss.heads import HEADS
from hmfss.inputs import check_device, check_img_size, check_path
from hmfss.model import FewShotSegmenter, build_model, check_segmenter
from hmfss.skip_init import random_init_skipped
from hmfss.weights import check_archive_crc, legacy_declared_bytes, load_restricted, load_state, tensor_problem

FORMAT = "hmfss"
VERSION = 1


def save_checkpoint(model: nn.Module, path: str | Path, **extra: Any) -> Path:
    """Write ``model`` (its config and full state_dict, on CPU) plus ``extra`` entries."""
    check_segmenter(model)
    path = check_path(path, "checkpoint path")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), "model": state}
    payload.update(extra)
    return atomic_save(payload, path)


def _check_archive(path: Path) -> bool:
    """Whether ``path`` is a zip-format checkpoint; refuse one whose records are compressed or
    declare more bytes than the file holds (a small file must not fill the memory), or whose
    data fails its CRC-32 (torch.load would load the damaged tensor)."""
    if not zipfile.is_zipfile(path):
        with path.open("rb") as handle:
            head = handle.read(2)
        if not head.startswith(b"\x80"):  # neither torch's zip format nor a (legacy) pickle
            raise HmfssError(f"{path} is not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)")
        declared, size = legacy_declared_bytes(path), path.stat().st_size
        if declared > size:
            raise HmfssError(f"checkpoint {path} declares {declared} bytes of tensor data in a {size}-byte file; "
                             f"it is damaged or crafted")
        return False
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
            if not any(r.filename.endswith("data.pkl") for r in records):
                raise HmfssError(f"{path} is a zip archive but not a PyTorch checkpoint (it has no data.pkl)")
            declared = sum(r.file_size for r in records)
            if any(r.compress_type != zipfile.ZIP_STORED for r in records) or declared > size:
                raise HmfssError(f"checkpoint {path} declares {declared} bytes of data in a {size}-byte file "
                                 f"(compressed records); torch.save never writes such files")
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise HmfssError(f"checkpoint {path} is a damaged zip archive: {exc}") from None
    check_archive_crc(path, "checkpoint")
    return True


def _clean_reason(exc: BaseException) -> str:
    """First line of a loading error, without torch's advice to turn the safe loader off."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    lines = [line for line in lines if "weights_only" not in line and "Weights only" not in line]
    return lines[0] if lines else type(exc).__name__


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file onto the CPU without executing pickled code.

    Zip-format files are memory-mapped (after their declared sizes were checked), so loading
    never takes more memory than the file's size.
    """
    path = check_path(path, "checkpoint")
    if not path.is_file():
        raise HmfssError(f"checkpoint not found: {path}")
    mmap = _check_archive(path)
    with warnings.catch_warnings():  # torch's notes on pickle protocols are not the user's concern
        warnings.simplefilter("ignore")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except Exception:
            try:
                obj = load_restricted(path, mmap=mmap)
            except HmfssError:
                raise
            except Exception as exc:
                raise HmfssError(f"cannot read checkpoint {path}: damaged or not a PyTorch checkpoint "
                                 f"({_clean_reason(exc)})") from None
    if not isinstance(obj, dict):
        raise HmfssError(f"checkpoint {path} holds a {type(obj).__name__}, not a state_dict or an hmfss checkpoint")
    return obj


def _tensor_state(state: Any, path: str | Path, where: str) -> dict[str, Tensor]:
    """``state`` as a dict of tensors, else an error naming the first foreign entry."""
    if not isinstance(state, dict):
        raise HmfssError(f"checkpoint {path}: {where} is a {type(state).__name__}, not a state_dict")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise HmfssError(f"checkpoint {path}: {where} entry {key!r} is a {type(value).__name__}, not a tensor")
        problem = tensor_problem(key, value)
        if problem is not None:
            raise HmfssError(f"checkpoint {path}: {where} entry {problem}")
    return state


def check_finite(state: dict[str, Tensor], path: str | Path) -> None:
    """Refuse weights holding NaN or infinite values (e.g. saved from a diverged run)."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise HmfssError(f"checkpoint {path} holds NaN or infinite weights ({key}); it is unusable")


def checkpoint_state(obj: dict[str, Any], path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """(state_dict, hmfss config or None) of a loaded checkpoint object."""
    if obj.get("format") == FORMAT:
        if "model" not in obj:
            raise HmfssError(f"checkpoint {path} is an hmfss checkpoint without its 'model' entry")
        version = obj.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= VERSION:
            raise HmfssError(f"checkpoint {path} has format version {version!r}; this hmfss reads versions 1 to "
                             f"{VERSION} (a newer hmfss wrote it?)")
        config = obj.get("config")
        if not isinstance(config, dict):
            raise HmfssError(f"checkpoint {path}: 'config' is a {type(config).__name__}, not a mapping")
        return _tensor_state(obj["model"], path, "'model'"), config
    if isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    state = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise HmfssError(f"checkpoint {path} holds no tensors")
    return _tensor_state(state, path, "the state_dict"), None


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
    if not isinstance(model, FewShotSegmenter):
        raise HmfssError(f"model must be a FewShotSegmenter (from build_model), got {type(model).__name__}")
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
    check_finite(state, path)
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
    check_device(str(device))
    check_img_size(img_size, "img_size (--img-size)", optional=True)
    obj = read_checkpoint(path)
    _, config = checkpoint_state(obj, path)
    config = dict(config or {})
    arch = arch or config.get("arch")
    backbone = backbone or config.get("backbone")
    if config.get("arch") is not None and (arch, backbone) != (config["arch"], config.get("backbone")):
        raise HmfssError(f"checkpoint {path} is a {config['arch']}/{config.get('backbone')} model, "
                         f"not {arch}/{backbone} (leave --arch / --backbone out)")
    if arch is None or backbone is None:
        raise HmfssError(
            f"checkpoint {path} is not an hmfss checkpoint: give the architecture and backbone "
            f"(--arch, --backbone)"
        )
    saved_size = check_img_size(config.get("img_size"), f"checkpoint {path}: its img_size", optional=True)
    saved_options = config.get("options", {})
    if not isinstance(saved_options, dict):
        raise HmfssError(f"checkpoint {path}: 'options' is a {type(saved_options).__name__}, not a mapping")
    defaults = HEADS[arch].benchmark_options(benchmark) if benchmark is not None and arch in HEADS else {}
    merged = {**defaults, **saved_options, **options}
    try:
        with random_init_skipped():  # every weight is loaded below, strictly
            model = build_model(arch, backbone, masking or config.get("masking") or "hm",
                                img_size=img_size or saved_size, **merged)
        model.check_image_size(model.config.img_size)
    except HmfssError as exc:
        raise HmfssError(f"checkpoint {path}: {exc}") from None
    model.to(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        apply_checkpoint(model, obj, path)
    model.eval()
    return model
