"""Training configuration: a dataclass, YAML / JSON reading and writing, CLI overrides, and
the head's recipe filled in once.

Precedence: dataclass defaults < ``--config FILE`` < command-line flags; settings still unset
then come from the head's recipe (:func:`resolve`). Every run directory holds the fully
resolved configuration as ``config.yaml``; ``--resume RUN`` reads it back.
"""

from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from hmfss.atomic import atomic_write_text
from hmfss.data.augment import augmentation_from_config, augmentation_to_config
from hmfss.errors import HmfssError
from hmfss.heads import HEADS
from hmfss.heads.recipe import PhotometricAugmentation
from hmfss.inputs import MAX_WORKERS, check_at_most, check_device, check_img_size, check_seed

VAL_SPLITS = ("val", "test", "heldout")
OPTIMIZERS = ("adam", "adamw")


@dataclass
class TrainConfig:
    # data
    benchmark: str = "fss"
    datapath: str | None = None
    splits: str | None = None
    fold: int = 0
    classes: str | None = None  # folder benchmark: file listing the test classes
    test_ratio: float | None = None  # folder benchmark: seeded fraction of test classes
    split_seed: int = 0
    img_size: int | None = None  # default: the head's recipe (400 HSNet/ASNet; VAT 473, COCO 417)
    # model
    arch: str = "hsnet"
    backbone: str = "resnet50"
    backbone_weights: str | None = None  # .pth, or "imagenet" for efficientnet-lite0
    masking: str = "hm"
    model_options: dict[str, Any] = field(default_factory=dict)  # head options; VAT's benchmark: the data's
    # optimisation; None = the head's recipe (HEADS[arch].recipe), filled in by resolve()
    optimizer: str | None = None  # adam | adamw
    lr: float | None = None
    weight_decay: float | None = None
    decoder_lr: float | None = None  # a second group for parameters named *decoder* (VAT)
    decoder_weight_decay: float | None = None
    augmentation: str | dict[str, Any] | None = None  # none | photometric | {PhotometricAugmentation fields}
    bsz: int = 20  # episodes per optimizer step, over all processes
    epochs: int = 100
    episodes_per_epoch: int | None = None  # default: the benchmark's training epoch size
    seed: int = 0
    # validation / model selection
    val_split: str = "val"  # val (the original's choice) | test | heldout
    heldout_ratio: float = 0.1
    heldout_seed: int = 0
    val_episodes: int | None = None  # default: the split's standard count
    val_seed: int = 0
    val_protocol: str | None = None  # default: the benchmark's (hsnet; seeded for folders)
    # run
    logdir: str | None = None
    workers: int = 4
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = False
    compile: bool = False
    checkpoint_every: int = 0  # also write last.pt every N steps inside an epoch (0 = epoch end only)
    tensorboard: bool = True  # when torch.utils.tensorboard is importable
    progress: bool = True
    skip_bad_images: bool = False
    find_unused_parameters: bool = False  # DDP option for heads with unused parameters

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "TrainConfig":
        return cls(**check_values(data, source))


@dataclass(frozen=True)
class TrainSettings:
    """A run's configuration resolved once: ``config`` as config.yaml stores it (every recipe
    setting filled in) and the typed augmentation the data loaders apply (None: none)."""

    config: TrainConfig
    augmentation: PhotometricAugmentation | None


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _accepts(kind: Any, value: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits the annotation ``kind`` (with int -> float widening)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            ok, converted = _accepts(option, value)
            if ok:
                return True, converted
        return False, value
    if kind is type(None):
        return value is None, value
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if kind is str:
        return isinstance(value, str), value
    if origin is dict or kind is dict:
        return isinstance(value, dict), value
    return True, value


def _type_name(kind: Any) -> str:
    args = typing.get_args(kind)
    if args:
        return " or ".join(_type_name(a) for a in args)
    return "null" if kind is type(None) else getattr(kind, "__name__", str(kind))


def check_values(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Validate keys and value types of a (partial) config mapping; returns converted values."""
    types = _field_types()
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in types:
            raise HmfssError(f"{source}: unknown setting {key!r}")
        ok, converted = _accepts(types[name], value)
        if not ok:
            raise HmfssError(f"{source}: {key} must be {_type_name(types[name])}, got {value!r}")
        out[name] = converted
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON mapping of settings (partial configs are fine)."""
    path = Path(path)
    if not path.is_file():
        raise HmfssError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HmfssError(f"cannot read config file {path}: {exc}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        first = " ".join(str(exc).split())
        raise HmfssError(f"config file {path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {first}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise HmfssError(f"config file {path} must hold a mapping of settings, got {type(data).__name__}")
    return check_values(data, str(path))


def resolve_settings(file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainSettings:
    """Defaults, then the file's settings, then ``overrides`` (e.g. command-line flags), then
    the head's recipe for what is still unset; validated and resolved once (:func:`resolve`)."""
    merged: dict[str, Any] = {}
    if file is not None:
        merged.update(read_config_file(file))
    if overrides:
        merged.update(check_values(overrides, "command line"))
    cfg = TrainConfig(**merged)
    validate(cfg)
    return resolve(cfg)


def resolve_config(file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The configuration of :func:`resolve_settings` (what config.yaml stores)."""
    return resolve_settings(file, overrides).config


def validate(cfg: TrainConfig) -> None:
    """Value checks that need neither the data nor the head (:func:`resolve` checks the
    augmentation and the arch). Every number must be finite (a NaN learning rate would only
    show up as a NaN loss, or as a traceback of the optimiser)."""
    for name, value in _numbers(cfg):
        if not math.isfinite(value):
            raise HmfssError(f"{name} must be a finite number, got {value}")
    if cfg.val_split not in VAL_SPLITS:
        raise HmfssError(f"val_split must be one of {', '.join(VAL_SPLITS)}, got {cfg.val_split!r}")
    for name in ("seed", "val_seed", "heldout_seed", "split_seed"):
        check_seed(getattr(cfg, name), name)
    for name in ("bsz", "epochs"):
        if getattr(cfg, name) < 1:
            raise HmfssError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    for name in ("episodes_per_epoch", "val_episodes", "img_size"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise HmfssError(f"{name} must be at least 1, got {value}")
    check_img_size(cfg.img_size, optional=True)
    check_device(cfg.device)
    for name in ("lr", "decoder_lr"):
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            raise HmfssError(f"{name} must be positive, got {value}")
    for name in ("weight_decay", "decoder_weight_decay"):
        value = getattr(cfg, name)
        if value is not None and value < 0:
            raise HmfssError(f"{name} must not be negative, got {value}")
    if cfg.optimizer is not None and cfg.optimizer not in OPTIMIZERS:
        raise HmfssError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    if cfg.workers < 0 or cfg.checkpoint_every < 0:
        raise HmfssError("workers and checkpoint_every must not be negative")
    check_at_most(cfg.workers, "workers", MAX_WORKERS)
    if not 0.0 < cfg.heldout_ratio < 1.0:
        raise HmfssError(f"heldout_ratio must be in (0, 1), got {cfg.heldout_ratio}")


def _numbers(cfg: TrainConfig) -> list[tuple[str, float]]:
    """(name, value) of every float setting, including those of an augmentation mapping."""
    out = [(f.name, getattr(cfg, f.name)) for f in fields(cfg) if isinstance(getattr(cfg, f.name), float)]
    if isinstance(cfg.augmentation, dict):
        for key, value in cfg.augmentation.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            out += [(f"augmentation {key}", v) for v in values if isinstance(v, float)]
    return out


def _first_set(*values: Any) -> Any:
    """The first value that is not None (the last one always is set)."""
    return next(v for v in values if v is not None)


def resolve(cfg: TrainConfig) -> TrainSettings:
    """``cfg`` with every setting left to the head's recipe filled in, and its augmentation parsed.

    Optimiser, learning rate and weight decay, the decoder parameter group, the augmentation,
    the head's data-dependent options (VAT's ``benchmark``: the training benchmark's, PASCAL's
    for folders) and the image size come from ``HEADS[arch].recipe`` unless set. An explicit
    ``lr`` / ``weight_decay`` also applies to the decoder group unless ``decoder_lr`` /
    ``decoder_weight_decay`` are set. ``config`` is what a run stores in its config.yaml, so
    resolving it again changes nothing and ``--resume`` rebuilds the same optimiser.
    """
    head = HEADS.get(cfg.arch)
    if head is None:
        raise HmfssError(f"unknown arch {cfg.arch!r}; choose one of {', '.join(sorted(HEADS))}")
    recipe = head.recipe
    lr = _first_set(cfg.lr, recipe.lr)
    weight_decay = _first_set(cfg.weight_decay, recipe.weight_decay)
    decoder_lr = decoder_wd = None
    if any(v is not None for v in (recipe.decoder_lr, recipe.decoder_weight_decay, cfg.decoder_lr,
                                   cfg.decoder_weight_decay)):
        decoder_lr = float(_first_set(cfg.decoder_lr, cfg.lr, recipe.decoder_lr, lr))
        decoder_wd = float(_first_set(cfg.decoder_weight_decay, cfg.weight_decay, recipe.decoder_weight_decay,
                                      weight_decay))
    augmentation = recipe.augmentation if cfg.augmentation is None else augmentation_from_config(cfg.augmentation)
    options = {**head.benchmark_options(cfg.benchmark), **cfg.model_options}
    img_size = cfg.img_size or head.default_img_size(**options)
    config = replace(cfg, optimizer=cfg.optimizer or recipe.optimizer, lr=float(lr), weight_decay=float(weight_decay),
                     decoder_lr=decoder_lr, decoder_weight_decay=decoder_wd,
                     augmentation=augmentation_to_config(augmentation), model_options=options, img_size=int(img_size))
    return TrainSettings(config, augmentation)


def resolve_recipe(cfg: TrainConfig) -> TrainConfig:
    """The resolved configuration of :func:`resolve` (what config.yaml stores)."""
    return resolve(cfg).config


def dump_yaml(cfg: TrainConfig | dict[str, Any]) -> str:
    data = cfg.to_dict() if isinstance(cfg, TrainConfig) else dict(cfg)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def write_config(cfg: TrainConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically."""
    return atomic_write_text(path, dump_yaml(cfg))


def config_fields() -> list[str]:
    return [f.name for f in fields(TrainConfig)]
