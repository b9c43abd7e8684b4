"""Episodic training (SPEC §5): 1-shot episodes, 2-class cross-entropy, frozen backbone, and
each head's original recipe (SPEC §5.2: optimiser, learning rate, parameter groups, image size,
photometric augmentation; see :func:`~hmfss.training.config.resolve_recipe`).

One call to :func:`train` runs (or resumes) a run directory::

    RUN/config.yaml      resolved configuration (``--resume RUN`` reads it back)
    RUN/log.txt          plain text log (appended on resume)
    RUN/history.jsonl    one JSON object per epoch; RUN/history.csv the same as a table
    RUN/best.pt          best validation mIoU so far (an hmfss checkpoint: ``hmfss predict``/``test``)
    RUN/last.pt          latest state: model, optimizer, epoch/step, best score, RNG states
    RUN/tb/              TensorBoard scalars (when tensorboard is installed)

Training episodes of epoch e are a pure function of (seed, e): every epoch draws a fresh
seeded permutation of the training queries (COCO: a class, then a query) with one support of
the same class. Under ``torchrun`` the list is dealt round-robin to the ranks (no duplicates;
``bsz`` is the global batch), gradients of the head are averaged by DDP, validation episodes are
sharded and the metric accumulators summed over ranks; only rank 0 writes files.

``last.pt`` is written atomically at every epoch end (and every ``checkpoint_every`` steps);
resuming restores weights, optimizer, position in the epoch (the sampler state) and every
rank's RNG states, so an interrupted-then-resumed run ends with the same weights as an
uninterrupted one (same device, world size and worker-free determinism). Augmented training
images are too: each episode's augmentation is drawn from a generator seeded by (seed, epoch,
position of the episode in the epoch), in the data-loading workers.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hmfss.atomic import atomic_write_text
from hmfss.data.augment import augmentation_from_config, describe_augmentation
from hmfss.errors import HmfssError
from hmfss.training.config import RESUMABLE_OVERRIDES, TrainConfig, resolve_recipe, validate, write_config
from hmfss.training.distributed import (
    DistInfo,
    all_gather_objects,
    any_rank,
    broadcast_object,
    cleanup,
    init_distributed,
    reduce_meter,
    rng_state,
    seed_everything,
    set_rng_state,
    shard,
    worker_init,
)

LOGGER_NAME = "hmfss.train"
HISTORY_FIELDS = ("epoch", "step", "train_loss", "train_miou", "train_fb_iou", "val_miou", "val_fb_iou",
                  "best_miou", "best_epoch", "lr", "episodes", "episodes_per_s", "epoch_seconds")


class TrainingStopped(Exception):
    """Raised by the debug option ``stop_after_steps`` to simulate a crash (nothing is saved)."""


@dataclass
class TrainResult:
    run_dir: Path
    best_miou: float
    best_epoch: int
    epochs: int
    history: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, torch.Tensor] = field(default_factory=dict)  # final model weights (CPU), on every rank


# ---- data ---------------------------------------------------------------------------------------


@dataclass
class DataSetup:
    train_info: Any
    val_info: Any
    reader: Any
    val_episodes: list
    val_description: str
    train_protocol: str = "seeded"


def _load_split(cfg: TrainConfig, split: str):
    from hmfss.data.splits import load_split

    return load_split(cfg.benchmark, cfg.splits, cfg.fold, split, datapath=cfg.datapath,
                      classes_file=cfg.classes, test_ratio=cfg.test_ratio, split_seed=cfg.split_seed)


def heldout_split(info, ratio: float, seed: int):
    """Split the training classes of ``info`` into (train, held-out) infos, seeded."""
    ids = sorted(info.class_ids) if info.sampling == "class-first" else sorted({c for _, c in info.entries})
    if len(ids) < 2:
        raise HmfssError(f"--val-split heldout needs at least 2 training classes, {info.benchmark} has {len(ids)}")
    count = min(len(ids) - 1, max(1, int(round(ratio * len(ids)))))
    order = np.random.RandomState(seed).permutation(len(ids))
    held = sorted(ids[i] for i in order[:count])
    keep = sorted(set(ids) - set(held))

    def subset(classes: list[int], split: str, default_episodes: int):
        chosen = set(classes)
        return replace(
            info, split=split, class_ids=[c for c in info.class_ids if c in chosen] if info.sampling == "class-first" else classes,
            entries=[(n, c) for n, c in info.entries if info.sampling == "class-first" or c in chosen],
            classwise={c: v for c, v in info.classwise.items() if c in chosen},
            default_episodes=default_episodes,
        )

    train = subset(keep, "trn", info.default_episodes)
    if train.sampling != "class-first":
        train = replace(train, default_episodes=len(train.entries))
    val_entries = [e for e in info.entries if e[1] in set(held)]
    val = subset(held, "heldout", 1000 if info.sampling == "class-first" else min(1000, len(val_entries)))
    return train, val


def training_episodes(info, seed: int, epoch: int, count: int):
    """The training episodes of one epoch: a pure function of (split, seed, epoch, count).

    Query-order benchmarks: a fresh permutation of all training (query, class) entries,
    repeated as needed to reach ``count``. COCO-style class-first sampling: a uniform class,
    then a uniform query of that class. One support of the same class, different from the query.
    """
    from hmfss.data.episodes import Episode

    rng = np.random.default_rng([int(seed), int(epoch), 2])
    out = []
    if info.sampling == "class-first":
        classes = list(info.class_ids)
        for _ in range(count):
            cid = classes[int(rng.integers(len(classes)))]
            pool = info.classwise[cid]
            query = pool[int(rng.integers(len(pool)))]
            out.append(Episode(str(query), (_support(rng, pool, query),), int(cid)))
        return out
    entries = list(info.entries)
    while len(out) < count:
        for j in rng.permutation(len(entries)):
            query, cid = entries[int(j)]
            out.append(Episode(str(query), (_support(rng, info.classwise[cid], query),), int(cid)))
            if len(out) == count:
                break
    return out


def augmentation_seeds(seed: int, epoch: int, count: int) -> list[int]:
    """Per-episode seeds of the training augmentation of one epoch (a pure function)."""
    return [int(v) for v in np.random.SeedSequence([int(seed), int(epoch), 3]).generate_state(count, np.uint32)]


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser of ``cfg`` after :func:`~hmfss.training.config.resolve_recipe`: Adam or AdamW
    over the trainable parameters, one group, or two when ``decoder_lr`` / ``decoder_weight_decay``
    are set (parameters whose name contains "decoder" form the second; VAT)."""
    from hmfss.heads.recipe import Recipe

    cfg = resolve_recipe(cfg)  # no-op for a resolved config
    recipe = Recipe(optimizer=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, decoder_lr=cfg.decoder_lr,
                    decoder_weight_decay=cfg.decoder_weight_decay)
    groups = [g for g in recipe.param_groups(model) if g["params"]]
    if not groups:
        raise HmfssError(f"{cfg.arch} has no trainable parameters")
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
    return kind(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def describe_optimizer(optimizer: torch.optim.Optimizer) -> str:
    """e.g. "AdamW, 2 groups: 1,234 params lr 0.0005 wd 0 | 567 params lr 0.0005 wd 0"."""
    parts = [f"{sum(p.numel() for p in g['params']):,} params lr {g['lr']:g} wd {g['weight_decay']:g}"
             for g in optimizer.param_groups]
    n = len(parts)
    return f"{type(optimizer).__name__}, {n} group{'s' if n > 1 else ''}: " + " | ".join(parts)


def _support(rng: np.random.Generator, pool: list[str], query: str) -> str:
    others = [n for n in pool if n != query]
    if not others:
        raise HmfssError(f"class of {query!r} has no other image to use as support")
    return str(others[int(rng.integers(len(others)))])


def setup_data(cfg: TrainConfig) -> DataSetup:
    from hmfss.data.episodes import default_protocol, make_episodes
    from hmfss.data.readers import make_reader

    train = _load_split(cfg, "trn")
    if cfg.val_split == "heldout":
        train, val = heldout_split(train, cfg.heldout_ratio, cfg.heldout_seed)
        names = ", ".join(val.class_name(c) for c in (val.class_ids if val.sampling == "class-first"
                                                         else sorted({c for _, c in val.entries})))
        description = (f"held-out training classes ({cfg.heldout_ratio:g} of them, seed {cfg.heldout_seed}, "
                       f"removed from training): {names}")
        protocol = cfg.val_protocol or "seeded"
    else:
        val = _load_split(cfg, cfg.val_split)
        protocol = cfg.val_protocol or default_protocol(cfg.benchmark)
        if cfg.benchmark in ("pascal", "coco"):
            description = (f"{cfg.benchmark} fold {cfg.fold} {cfg.val_split} list = the fold's TEST classes and "
                           f"episodes (model selection on the test episodes, as the original HSNet; use "
                           f"--val-split heldout for a validation split of the training classes)")
        elif cfg.benchmark == "fss":
            description = (f"FSS {cfg.val_split} classes ({len(val.class_ids)}, disjoint from the training classes)"
                           + (" = the TEST classes" if cfg.val_split == "test" else ""))
        else:
            description = f"folder test classes ({len(val.class_ids)}; model selection on the test classes)"
    reader = make_reader(cfg.benchmark, cfg.datapath, val if cfg.benchmark == "folder" else train)
    if cfg.benchmark == "folder":  # a folder reader needs the masks of both splits
        from hmfss.data.readers import FolderReader

        masks = {**train.extra.get("masks", {}), **val.extra.get("masks", {})}
        reader = FolderReader(cfg.datapath, masks)
    val_episodes = make_episodes(val, 1, cfg.val_episodes, cfg.val_seed, protocol)
    description += f"; {len(val_episodes)} 1-shot episodes, protocol {protocol}, seed {cfg.val_seed}"
    return DataSetup(train, val, reader, val_episodes, description)


def _loader(dataset, batch_size: int, workers: int, seed: int):
    from torch.utils.data import DataLoader

    from hmfss.data.dataset import collate_episodes

    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate_episodes, worker_init_fn=worker_init if workers else None,
                      generator=gen, persistent_workers=False, pin_memory=False)


# ---- metrics -------------------------------------------------------------------------------------


def batch_stats(pred: torch.Tensor, gt: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-episode (B, 2) intersection and union and (B,) foreground fraction, vectorised."""
    pred = pred.bool()
    gt = gt > 0.5
    n = pred[0].numel()
    inter_fg = (pred & gt).flatten(1).sum(1)
    inter_bg = (~pred & ~gt).flatten(1).sum(1)
    pred_fg = pred.flatten(1).sum(1)
    gt_fg = gt.flatten(1).sum(1)
    inter = torch.stack([inter_bg, inter_fg], 1).double()
    area_pred = torch.stack([n - pred_fg, pred_fg], 1).double()
    area_gt = torch.stack([n - gt_fg, gt_fg], 1).double()
    union = area_pred + area_gt - inter
    return inter.cpu().numpy(), union.cpu().numpy(), (gt_fg.double() / n).cpu().numpy()


# ---- logging --------------------------------------------------------------------------------------


def _make_logger(run_dir: Path, info: DistInfo, console: bool) -> logging.Logger:
    logger = logging.getLogger(f"{LOGGER_NAME}.{id(run_dir)}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    if info.is_main:
        file_handler = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
        if console:
            stream = logging.StreamHandler(sys.stderr)
            stream.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(stream)
    else:
        logger.addHandler(logging.NullHandler())
    return logger


def _close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


class _Board:
    """TensorBoard scalars when ``torch.utils.tensorboard`` imports; otherwise nothing."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard not installed
            return
        self.writer = SummaryWriter(str(run_dir / "tb"))

    @property
    def active(self) -> bool:
        return self.writer is not None

    def scalars(self, values: dict[str, float | None], step: int) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if value is not None:
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_text(run_dir / "history.jsonl", "".join(json.dumps(row) + "\n" for row in history))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(HISTORY_FIELDS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in HISTORY_FIELDS})
    atomic_write_text(run_dir / "history.csv", buf.getvalue())


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "history.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---- precision ---------------------------------------------------------------------------------


def autocast_dtype(device: torch.device) -> torch.dtype:
    """bf16 where supported (CPU, recent GPUs), else fp16 (older GPUs, with a grad scaler)."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=autocast_dtype(device))


# ---- the run -------------------------------------------------------------------------------------


def _check_resume_config(saved: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    changed = {k: v for k, v in overrides.items() if getattr(saved, k) != v}
    bad = sorted(k for k in changed if k not in RESUMABLE_OVERRIDES and k != "logdir")
    if bad:
        raise HmfssError(
            f"cannot change {bad[0]!r} when resuming (the run was made with {bad[0]}={getattr(saved, bad[0])!r}); "
            f"start a new run instead"
        )
    return replace(saved, **{k: v for k, v in changed.items() if k != "logdir"})


def load_run_config(run_dir: str | Path) -> TrainConfig:
    from hmfss.training.config import read_config_file

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise HmfssError(f"run directory not found: {run_dir}")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise HmfssError(f"{run_dir} is not a training run (no config.yaml)")
    cfg = TrainConfig(**read_config_file(path))
    cfg.logdir = str(run_dir)
    return cfg


class Trainer:
    """One training run; see the module docstring. Use :func:`train`."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, console: bool = True,
                 stop_after_steps: int | None = None):
        validate(cfg)
        if not cfg.logdir:
            raise HmfssError("no run directory: give --logdir RUN")
        self.cfg = resolve_recipe(cfg)
        self.resume = resume
        self.console = console
        self.stop_after_steps = stop_after_steps
        self.run_dir = Path(cfg.logdir)

    # -- setup ----------------------------------------------------------------------------------

    def _prepare_dir(self, info: DistInfo) -> None:
        if info.is_main:
            if self.resume:
                if not (self.run_dir / "last.pt").is_file():
                    raise HmfssError(f"cannot resume: {self.run_dir / 'last.pt'} not found")
            elif (self.run_dir / "last.pt").is_file() or (self.run_dir / "config.yaml").is_file():
                raise HmfssError(f"{self.run_dir} already holds a training run; continue it with --resume "
                                 f"{self.run_dir} or choose another --logdir")
            self.run_dir.mkdir(parents=True, exist_ok=True)

    def _build_model(self, info: DistInfo):
        from hmfss.model import build_model

        cfg = self.cfg
        model = build_model(cfg.arch, cfg.backbone, cfg.masking, backbone_weights=cfg.backbone_weights,
                            img_size=cfg.img_size, **cfg.model_options)
        return model.to(info.device)

    def run(self) -> TrainResult:
        info = init_distributed(self.cfg.device)
        try:
            return self._run(info)
        finally:
            cleanup(info)

    def _run(self, info: DistInfo) -> TrainResult:
        cfg = self.cfg
        if cfg.bsz % info.world_size:
            raise HmfssError(f"--bsz {cfg.bsz} (global batch) must be a multiple of the {info.world_size} processes")
        error = None
        if info.is_main:
            try:
                self._prepare_dir(info)
            except HmfssError as exc:
                error = str(exc)
        error = broadcast_object(error, info)
        if error:
            raise HmfssError(error)
        log = _make_logger(self.run_dir, info, self.console)
        board = _Board(self.run_dir, cfg.tensorboard and info.is_main)
        try:
            return self._train(info, log, board)
        finally:
            board.close()
            _close_logger(log)

    def _train(self, info: DistInfo, log: logging.Logger, board: _Board) -> TrainResult:
        from torch.nn.parallel import DistributedDataParallel

        from hmfss.data.dataset import EpisodeDataset
        from hmfss.evaluation.metrics import SegmentationMeter
        from hmfss.checkpoint import save_checkpoint

        cfg = self.cfg
        seed_everything(cfg.seed)  # same initial head weights on every rank
        model = self._build_model(info)
        img_size = model.config.img_size
        data = setup_data(cfg)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = build_optimizer(model, cfg)
        augmentation = augmentation_from_config(cfg.augmentation)
        use_scaler = cfg.amp and info.device.type == "cuda" and autocast_dtype(info.device) == torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

        epoch_size = cfg.episodes_per_epoch or data.train_info.default_episodes
        global_epoch_size = epoch_size - epoch_size % info.world_size if info.enabled else epoch_size
        if global_epoch_size < 1:
            raise HmfssError(f"{epoch_size} episodes per epoch cannot be shared by {info.world_size} processes")
        local_bsz = cfg.bsz // info.world_size
        steps_per_epoch = math.ceil(global_epoch_size / info.world_size / local_bsz)

        start_epoch, start_step, global_step = 0, 0, 0
        best_miou, best_epoch = -1.0, 0
        history: list[dict[str, Any]] = []
        partial: dict[str, Any] | None = None
        if self.resume:
            state = None
            if info.is_main:
                from hmfss.checkpoint import read_checkpoint

                state = read_checkpoint(self.run_dir / "last.pt")
            state = broadcast_object(state, info)
            model.load_state_dict(state["model"])
            _check_optimizer_state(optimizer, state, self.run_dir / "last.pt")
            optimizer.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            start_epoch, start_step = int(state["epoch"]), int(state["step"])
            global_step = int(state["global_step"])
            best_miou, best_epoch = float(state["best_miou"]), int(state["best_epoch"])
            history = list(state.get("history", []))
            rngs = state.get("rng") or []
            same_world = int(state.get("world_size", 1)) == info.world_size and len(rngs) == info.world_size
            if start_step and not same_world:
                raise HmfssError(f"{self.run_dir / 'last.pt'} was written inside an epoch by "
                                 f"{state.get('world_size', 1)} processes; resume it with the same number")
            partial = state["partial"][info.rank] if state.get("partial") else None
            if same_world:
                set_rng_state(rngs[info.rank])
            else:
                log.info("world size changed since the checkpoint: RNG streams are re-seeded")
                seed_everything(cfg.seed + 1000 * start_epoch + info.rank)
        else:
            seed_everything(cfg.seed + info.rank)

        if info.is_main:
            write_config(cfg, self.run_dir / "config.yaml")
        n_params = sum(p.numel() for p in params)
        log.info(("resumed" if self.resume else "started") + f" {self.run_dir}: {cfg.arch}/{cfg.backbone} masking "
                 f"{cfg.masking}, {n_params:,} learnable parameters, img {img_size}, device {info.device}"
                 + (f", {info.world_size} processes ({info.backend})" if info.enabled else ""))
        if self.resume:
            log.info(f"resuming at epoch {start_epoch + 1} step {start_step} (global step {global_step}), "
                     f"best val mIoU so far {max(best_miou, 0):.2f}")
        log.info(f"training: {cfg.benchmark} {len({c for _, c in data.train_info.entries}) if data.train_info.sampling != 'class-first' else len(data.train_info.class_ids)} "
                 f"classes, {global_epoch_size} 1-shot episodes per epoch, batch {cfg.bsz}"
                 + (f" ({local_bsz} per process)" if info.enabled else "")
                 + f", {steps_per_epoch} steps per epoch, amp {'on (' + str(autocast_dtype(info.device)).replace('torch.', '') + ')' if cfg.amp else 'off'}")
        log.info(f"recipe: optimizer {describe_optimizer(optimizer)}; augmentation {describe_augmentation(augmentation)}"
                 + (f"; head options {cfg.model_options}" if cfg.model_options else ""))
        log.info(f"validation: {data.val_description}")
        if board.active:
            log.info(f"TensorBoard scalars in {self.run_dir / 'tb'}")
        elif cfg.tensorboard and info.is_main:
            log.info("TensorBoard not installed: no tb/ scalars (pip install tensorboard)")

        if info.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cudnn.deterministic = False
        net: torch.nn.Module = model
        if info.enabled:
            # The frozen backbone's parameters do not require gradients, so DDP's reducer holds
            # only the head's; buffers (frozen BN statistics) are identical and not re-broadcast.
            net = DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None,
                                          broadcast_buffers=False, find_unused_parameters=cfg.find_unused_parameters)
        if cfg.compile:
            net = torch.compile(net)

        val_shard = shard(data.val_episodes, info.rank, info.world_size, equal=False)
        val_set = EpisodeDataset(data.reader, val_shard, img_size)
        n_classes = data.val_info.n_classes

        result_epochs = start_epoch
        for epoch in range(start_epoch, cfg.epochs):
            episodes = training_episodes(data.train_info, cfg.seed, epoch, global_epoch_size)
            mine = shard(episodes, info.rank, info.world_size)
            first_step = start_step if epoch == start_epoch else 0
            seeds = None
            if augmentation is not None:  # aligned with the episodes: same sharding, same offset
                seeds = shard(augmentation_seeds(cfg.seed, epoch, len(episodes)), info.rank, info.world_size)
                seeds = seeds[first_step * local_bsz:]
            dataset = EpisodeDataset(data.reader, mine[first_step * local_bsz:], img_size,
                                     augmentation=augmentation, augment_seeds=seeds)
            loader = _loader(dataset, local_bsz, cfg.workers, (cfg.seed * 100003 + epoch) * 1009 + info.rank)
            meter = SegmentationMeter(data.train_info.class_ids if data.train_info.sampling == "class-first"
                                      else sorted({c for _, c in data.train_info.entries}),
                                      data.train_info.n_classes, data.train_info.class_names)
            sums = np.zeros(3)  # loss * episodes, episodes, skipped
            elapsed = 0.0
            if partial is not None and epoch == start_epoch and first_step:
                sums = np.asarray(partial["sums"], dtype=np.float64)
                elapsed = float(partial["seconds"])
                for name in ("inter", "union", "episodes", "bucket_inter", "bucket_union", "bucket_episodes"):
                    setattr(meter, name, np.asarray(partial["meter"][name]).astype(getattr(meter, name).dtype))
            model.train()
            bar = self._bar(info, len(mine), epoch, first_step * local_bsz)
            tick = time.perf_counter()
            step = first_step
            try:
                for batch in loader:
                    if batch["errors"]:
                        if not cfg.skip_bad_images:
                            raise HmfssError(batch["errors"][0][1])
                        sums[2] += len(batch["errors"])
                    loss_value = self._step(net, model, optimizer, scaler, batch, meter, info)
                    sums[0] += loss_value * batch["size"]
                    sums[1] += batch["size"]
                    step += 1
                    global_step += 1
                    if bar is not None:
                        bar.update(batch["size"] + len(batch["errors"]))
                        bar.set_postfix(loss=f"{sums[0] / max(sums[1], 1):.4f}", mIoU=f"{meter.miou():.1f}", refresh=False)
                    if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < steps_per_epoch:
                        self._save_last(model, optimizer, scaler, info, epoch, step, global_step, best_miou,
                                        best_epoch, history, sums, meter, elapsed + time.perf_counter() - tick)
                    if self.stop_after_steps is not None and global_step >= self.stop_after_steps:
                        raise TrainingStopped(f"stopped after {global_step} steps (debug option)")
            finally:
                if bar is not None:
                    bar.close()
            train_seconds = elapsed + time.perf_counter() - tick
            sums = np.asarray(_reduce_sums(sums, info))
            reduce_meter(meter, info)
            train_loss = float(sums[0] / max(sums[1], 1))
            eps_per_s = float(sums[1]) / max(train_seconds, 1e-9)
            val = self._validate(model, val_set, data, n_classes, info)
            improved = val["miou"] > best_miou
            if improved:
                best_miou, best_epoch = val["miou"], epoch + 1
            row = {
                "epoch": epoch + 1, "step": global_step, "train_loss": round(train_loss, 6),
                "train_miou": round(meter.miou(), 4), "train_fb_iou": round(meter.fb_iou(), 4),
                "val_miou": round(val["miou"], 4), "val_fb_iou": round(val["fb_iou"], 4),
                "best_miou": round(best_miou, 4), "best_epoch": best_epoch, "lr": cfg.lr,
                "episodes": int(sums[1]), "episodes_per_s": round(eps_per_s, 3),
                "epoch_seconds": round(train_seconds + val["seconds"], 2),
                "val_buckets": [b["miou"] for b in val["buckets"]],
            }
            if sums[2]:
                row["skipped"] = int(sums[2])
            history.append(row)
            if info.is_main:
                if improved:
                    save_checkpoint(model, self.run_dir / "best.pt", epoch=epoch + 1, val_miou=val["miou"],
                                    val_fb_iou=val["fb_iou"], train_config=cfg.to_dict())
                write_history(self.run_dir, history)
            self._save_last(model, optimizer, scaler, info, epoch + 1, 0, global_step, best_miou, best_epoch,
                            history, None, None, 0.0)
            board.scalars({"trn/loss": train_loss, "trn/miou": meter.miou(), "trn/fb_iou": meter.fb_iou(),
                           "trn/episodes_per_s": eps_per_s, "val/miou": val["miou"], "val/fb_iou": val["fb_iou"]},
                          epoch + 1)
            log.info(f"epoch {epoch + 1}/{cfg.epochs}: loss {train_loss:.4f} train mIoU {meter.miou():.2f} | "
                     f"val mIoU {val['miou']:.2f} FB-IoU {val['fb_iou']:.2f}"
                     + (" (best)" if improved else f" (best {best_miou:.2f} @ {best_epoch})")
                     + f" | {eps_per_s:.2f} episodes/s, {train_seconds:.0f}s train + {val['seconds']:.0f}s val"
                     + (f" | {int(sums[2])} episodes skipped (unreadable files)" if sums[2] else ""))
            result_epochs = epoch + 1
        log.info(f"done: best val mIoU {max(best_miou, 0):.2f} at epoch {best_epoch}; checkpoints in {self.run_dir}")
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return TrainResult(self.run_dir, max(best_miou, 0.0), best_epoch, result_epochs, history, state)

    # -- pieces ---------------------------------------------------------------------------------

    def _bar(self, info: DistInfo, total: int, epoch: int, done: int):
        if not (self.cfg.progress and info.is_main and sys.stderr.isatty()):
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=done, unit="ep", desc=f"epoch {epoch + 1}/{self.cfg.epochs}",
                    file=sys.stderr, dynamic_ncols=True, leave=False)

    def _step(self, net, model, optimizer, scaler, batch, meter, info: DistInfo) -> float:
        device = info.device
        optimizer.zero_grad(set_to_none=True)
        if not batch["size"]:
            if not info.enabled:
                return 0.0  # nothing to learn from; no step
            # every rank must join the gradient all-reduce: a zero loss over the head
            loss = sum(p.sum() * 0.0 for p in model.parameters() if p.requires_grad)
            loss.backward()
            optimizer.step()
            return 0.0
        query = batch["query_img"].to(device, non_blocking=True)
        support = batch["support_imgs"][:, 0].to(device, non_blocking=True)
        mask = batch["support_masks"][:, 0].to(device, non_blocking=True)
        target = batch["query_mask"].to(device, non_blocking=True)
        with _autocast(device, self.cfg.amp):
            logits = net(query, support, mask)
        loss = F.cross_entropy(logits.float(), target.long())
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            inter, union, frac = batch_stats(logits.argmax(1), target)
        for i, cid in enumerate(batch["class_id"].tolist()):
            meter.update(cid, inter[i], union[i], float(frac[i]))
        return float(loss.detach())

    def _validate(self, model, val_set, data: DataSetup, n_classes: int, info: DistInfo) -> dict[str, Any]:
        from hmfss.data.dataset import episode_loader
        from hmfss.evaluation.metrics import SegmentationMeter
        from hmfss.evaluation.evaluate import evaluate

        cfg = self.cfg
        tick = time.perf_counter()
        meter = SegmentationMeter(data.val_info.class_ids if data.val_info.sampling == "class-first"
                                  else sorted({c for _, c in data.val_info.entries}),
                                  n_classes, data.val_info.class_names)
        failed = None
        try:
            if len(val_set):
                with _autocast(info.device, cfg.amp):
                    evaluate(model, episode_loader(val_set, max(1, cfg.bsz // info.world_size), cfg.workers),
                             meter, info.device, skip_bad=cfg.skip_bad_images,
                             progress=cfg.progress and info.is_main and sys.stderr.isatty(), total=len(val_set))
        except HmfssError as exc:
            failed = str(exc)
        if any_rank(failed is not None, info):
            raise HmfssError(failed or "validation failed on another process")
        reduce_meter(meter, info)
        model.train()
        out = meter.summary()
        out["seconds"] = time.perf_counter() - tick
        return out

    def _save_last(self, model, optimizer, scaler, info: DistInfo, epoch: int, step: int, global_step: int,
                   best_miou: float, best_epoch: int, history, sums, meter, seconds: float) -> None:
        from hmfss.checkpoint import save_checkpoint

        local = None
        if step:  # this rank's running sums of the unfinished epoch
            local = {"sums": torch.as_tensor(sums), "seconds": seconds,
                     "meter": {n: torch.as_tensor(getattr(meter, n)) for n in
                               ("inter", "union", "episodes", "bucket_inter", "bucket_union", "bucket_episodes")}}
        gathered = all_gather_objects((rng_state(), local), info)
        if not info.is_main:
            return
        rngs = [g[0] for g in gathered]
        partial = [g[1] for g in gathered] if step else None
        save_checkpoint(model, self.run_dir / "last.pt", optimizer=optimizer.state_dict(),
                        optimizer_kind=type(optimizer).__name__,
                        scaler=scaler.state_dict() if scaler.is_enabled() else None,
                        epoch=epoch, step=step, global_step=global_step, best_miou=best_miou, best_epoch=best_epoch,
                        history=history, rng=rngs, world_size=info.world_size, partial=partial,
                        sampler={"seed": self.cfg.seed, "epoch": epoch, "step": step, "kind": "seeded-permutation"},
                        train_config=self.cfg.to_dict())


def _check_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any], path: Path) -> None:
    """The saved optimizer state must come from the same kind of optimiser with the same groups."""
    kind = state.get("optimizer_kind")
    if kind is not None and kind != type(optimizer).__name__:
        raise HmfssError(f"{path} holds {kind} optimizer state, but the run's config gives "
                         f"{type(optimizer).__name__}; was config.yaml edited?")
    saved = [len(g["params"]) for g in state["optimizer"]["param_groups"]]
    ours = [len(g["params"]) for g in optimizer.param_groups]
    if saved != ours:
        raise HmfssError(f"{path} holds optimizer groups of {saved} parameters, the model has {ours}; "
                         f"was config.yaml edited?")


def _reduce_sums(sums: np.ndarray, info: DistInfo) -> np.ndarray:
    from hmfss.training.distributed import all_reduce_sum

    return all_reduce_sum([np.asarray(sums, dtype=np.float64)], info)[0]


def train(cfg: TrainConfig, resume: bool = False, console: bool = True,
          stop_after_steps: int | None = None) -> TrainResult:
    """Run (or with ``resume`` continue) the training described by ``cfg``; see the module doc."""
    return Trainer(cfg, resume=resume, console=console, stop_after_steps=stop_after_steps).run()


def resume_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The config of an existing run with allowed ``overrides`` (epochs, workers, ...) applied."""
    saved = load_run_config(run_dir)
    cfg = _check_resume_config(saved, dict(overrides or {}))
    validate(cfg)
    return cfg
