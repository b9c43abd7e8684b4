"""Episodic training: 1-shot episodes, 2-class cross-entropy, frozen backbone, and each head's
original recipe (optimiser, learning rate, parameter groups, image size, photometric
augmentation; see :func:`~hmfss.training.config.resolve`).

One call to :func:`train` runs (or resumes) a run directory (see :mod:`hmfss.training.rundir`).
Training episodes of epoch e are a pure function of (seed, e) (:mod:`hmfss.data.sampling`).
Under ``torchrun`` the list is dealt round-robin to the ranks (no duplicates; ``bsz`` is the
global batch), gradients of the head are averaged by DDP, validation episodes are sharded and
the metric accumulators summed over ranks; only rank 0 writes files.

``last.pt`` is written atomically at every epoch end (and every ``checkpoint_every`` steps);
resuming restores weights, optimizer, position in the epoch and every rank's RNG states, so
an interrupted-then-resumed run ends with the same weights as an uninterrupted one (same
device, world size and worker-free determinism). Augmented training images are too: each
episode's augmentation is drawn from a generator seeded by (seed, epoch, position of the
episode in the epoch), in the data-loading workers.

A NaN or infinite loss or weight stops the run with one line before anything is saved
(:mod:`hmfss.training.divergence`). Resuming a run that holds no ``last.pt`` yet (stopped
before its first checkpoint) starts it from the beginning.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from hmfss.capability import bf16_warning
from hmfss.data.augment import describe_augmentation
from hmfss.data.dataset import EpisodeDataset, episode_loader
from hmfss.data.sampling import augmentation_seeds, training_episodes
from hmfss.data.splits import SplitInfo
from hmfss.errors import HmfssError, out_of_memory
from hmfss.evaluation.evaluate import evaluate
from hmfss.evaluation.metrics import SegmentationMeter
from hmfss.fast.memory import keep_freed_memory
from hmfss.model import build_model
from hmfss.training.config import TrainConfig, TrainSettings, resolve, validate
from hmfss.training.data import epoch_loader, setup_data, timed_batches
from hmfss.training.distributed import (
    DistInfo,
    all_reduce_sum,
    any_rank,
    cleanup,
    init_distributed,
    on_main_rank,
    reduce_meter,
    seed_everything,
    shard,
)
from hmfss.training.divergence import Diverged, diverged_message, step_problem
from hmfss.training.optim import build_optimizer, describe_optimizer
from hmfss.training.precision import autocast, autocast_dtype, describe_amp, grad_scaler
from hmfss.training.rundir import (
    Board,
    EpochProgress,
    RunDir,
    RunState,
    close_logger,
    log_to_file,
    make_logger,
)
from hmfss.training.step import StepParts, forward_module, train_step


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


def train(cfg: TrainConfig | TrainSettings, resume: bool = False, console: bool = True,
          stop_after_steps: int | None = None) -> TrainResult:
    """Run (or with ``resume`` continue) the training described by ``cfg``; see the module doc.

    ``cfg``: resolved settings (:func:`~hmfss.training.config.resolve`), or a config that is
    validated and resolved here.
    """
    return Trainer(cfg, resume=resume, console=console, stop_after_steps=stop_after_steps).run()


def model_from_config(cfg: TrainConfig) -> torch.nn.Module:
    """The model a resolved config trains (on the CPU)."""
    return build_model(cfg.arch, cfg.backbone, cfg.masking, backbone_weights=cfg.backbone_weights,
                       img_size=cfg.img_size, **cfg.model_options)


def _new_meter(info: SplitInfo) -> SegmentationMeter:
    return SegmentationMeter(info.classes_in_use, info.n_classes, info.class_names)


def _rates(sums: np.ndarray, seconds: float) -> tuple[float, float]:
    """Mean loss and episodes per second of an epoch from its (loss x episodes, episodes, skipped) sums."""
    return float(sums[0] / max(sums[1], 1)), float(sums[1]) / max(seconds, 1e-9)


class Trainer:
    """One training run; see the module docstring. Use :func:`train`."""

    def __init__(self, cfg: TrainConfig | TrainSettings, resume: bool = False, console: bool = True,
                 stop_after_steps: int | None = None):
        if isinstance(cfg, TrainConfig):
            validate(cfg)
            cfg = resolve(cfg)
        if not cfg.config.logdir:
            raise HmfssError("no run directory: give --logdir RUN")
        self.settings = cfg
        self.cfg = cfg.config
        self.resume = resume
        self.console = console
        self.stop_after_steps = stop_after_steps
        self.run_dir = Path(self.cfg.logdir)

    def run(self) -> TrainResult:
        info = init_distributed(self.cfg.device)
        try:
            return self._run(info)
        finally:
            cleanup(info)

    def _run(self, info: DistInfo) -> TrainResult:
        if self.cfg.bsz % info.world_size:
            raise HmfssError(f"--bsz {self.cfg.bsz} (global batch) must be a multiple of the "
                             f"{info.world_size} processes")
        self.info = info
        self.dir = RunDir(self.run_dir, self.cfg, info)
        self.from_last = on_main_rank(lambda: self.dir.check(self.resume), info)
        self._build()  # before the run directory is created: bad settings or data leave nothing behind
        removed = on_main_rank(self.dir.create, info)
        self.log = make_logger(self.run_dir, info, self.console)
        self.board = Board(self.run_dir, self.cfg.tensorboard and info.is_main)
        try:
            if removed:
                self.log.info(f"removed {len(removed)} temp file(s) of interrupted writes: "
                              + ", ".join(p.name for p in removed))
            if self.resume and not self.from_last:
                self.log.info(f"no last.pt in {self.run_dir} (stopped before its first checkpoint): "
                              f"starting the run from the beginning")
            self._start()  # a refused resume leaves the run's files as they were
            try:
                return self._train()
            except (HmfssError, MemoryError, RuntimeError) as exc:  # divergence, a bad image, memory
                reason = str(exc) if isinstance(exc, HmfssError) else out_of_memory(exc)
                if reason is not None:
                    log_to_file(self.log, f"stopped: {reason}")  # the run folder says why it ended
                raise
        finally:
            self.board.close()
            close_logger(self.log)

    # -- setup ----------------------------------------------------------------------------------

    def _build(self) -> None:
        """Model, data, optimiser, scaler and sizes: everything that reads the inputs."""
        cfg, info = self.cfg, self.info
        seed_everything(cfg.seed)  # same initial head weights on every rank
        if info.device.type == "cpu":
            keep_freed_memory()  # no page faults of the step's large tensors at every step
        self.model = model_from_config(cfg).to(info.device)
        self.model.check_image_size(self.model.config.img_size)
        self.data = setup_data(cfg)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scaler = grad_scaler(info.device, cfg.amp)
        epoch_size = cfg.episodes_per_epoch or self.data.train_info.default_episodes
        self.epoch_size = epoch_size - epoch_size % info.world_size if info.enabled else epoch_size
        if self.epoch_size < 1:
            raise HmfssError(f"{epoch_size} episodes per epoch cannot be shared by {info.world_size} processes")
        self.local_bsz = cfg.bsz // info.world_size
        self.steps_per_epoch = math.ceil(self.epoch_size / info.world_size / self.local_bsz)

    def _start(self) -> None:
        """The run state (restored from last.pt when there is one), config.yaml, the start log."""
        cfg, info = self.cfg, self.info
        self.partial: dict[str, Any] | None = None
        if self.from_last:
            self.state, self.partial = self.dir.load_last(self.model, self.optimizer, self.scaler, self.log)
        else:
            self.state = RunState()
            seed_everything(cfg.seed + info.rank)
        self.dir.write_config()
        self._log_start(self.optimizer)
        if info.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cudnn.deterministic = False
        net = forward_module(self.model, info, cfg.compile, cfg.find_unused_parameters)
        self.parts = StepParts(net, self.model, self.optimizer, self.scaler, info.device, cfg.amp, info.enabled)
        val_shard = shard(self.data.val_episodes, info.rank, info.world_size, equal=False)
        self.val_set = EpisodeDataset(self.data.reader, val_shard, self.model.config.img_size)

    def _log_start(self, optimizer: torch.optim.Optimizer) -> None:
        cfg, info, log, state = self.cfg, self.info, self.log, self.state
        n_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        log.info(("resumed" if self.from_last else "started") + f" {self.run_dir}: {cfg.arch}/{cfg.backbone} masking "
                 f"{cfg.masking}, {n_params:,} learnable parameters, img {self.model.config.img_size}, "
                 f"device {info.device}" + (f", {info.world_size} processes ({info.backend})" if info.enabled else ""))
        if self.from_last:
            log.info(f"resuming at epoch {state.epoch + 1} step {state.step} (global step {state.global_step}), "
                     f"best val mIoU so far {max(state.best_miou, 0):.2f}")
        log.info(f"training: {cfg.benchmark} {len(self.data.train_info.classes_in_use)} classes, {self.epoch_size} "
                 f"1-shot episodes per epoch, batch {cfg.bsz}"
                 + (f" ({self.local_bsz} per process)" if info.enabled else "")
                 + f", {self.steps_per_epoch} steps per epoch, amp {describe_amp(info.device, cfg.amp)}")
        if cfg.amp and bf16_warning(info.device) and autocast_dtype(info.device) == torch.bfloat16:
            log.warning(bf16_warning(info.device))
        log.info(f"recipe: optimizer {describe_optimizer(optimizer)}; augmentation "
                 f"{describe_augmentation(self.settings.augmentation)}"
                 + (f"; head options {cfg.model_options}" if cfg.model_options else ""))
        log.info(f"validation: {self.data.val_description}")
        if self.board.active:
            log.info(f"TensorBoard scalars in {self.run_dir / 'tb'}")
        elif cfg.tensorboard and info.is_main:
            log.info("TensorBoard not installed: no tb/ scalars (pip install tensorboard)")

    # -- epochs ---------------------------------------------------------------------------------

    def _train(self) -> TrainResult:
        for epoch in range(self.state.epoch, self.cfg.epochs):
            progress = self._train_epoch(epoch)
            self._end_epoch(epoch, progress)
        state = self.state
        self.log.info(f"done: best val mIoU {max(state.best_miou, 0):.2f} at epoch {state.best_epoch}; "
                      f"checkpoints in {self.run_dir}")
        weights = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        return TrainResult(self.run_dir, max(state.best_miou, 0.0), state.best_epoch, state.epoch, state.history,
                           weights)

    def _epoch_loader(self, epoch: int, first_step: int):
        """This rank's training batches of ``epoch`` from step ``first_step`` on."""
        cfg, info = self.cfg, self.info
        episodes = training_episodes(self.data.train_info, cfg.seed, epoch, self.epoch_size)
        mine = shard(episodes, info.rank, info.world_size)
        skip = first_step * self.local_bsz
        seeds = None
        if self.settings.augmentation is not None:  # aligned with the episodes: same sharding, same offset
            seeds = shard(augmentation_seeds(cfg.seed, epoch, len(episodes)), info.rank, info.world_size)[skip:]
        dataset = EpisodeDataset(self.data.reader, mine[skip:], self.model.config.img_size,
                                 augmentation=self.settings.augmentation, augment_seeds=seeds)
        loader = epoch_loader(dataset, self.local_bsz, cfg.workers, (cfg.seed * 100003 + epoch) * 1009 + info.rank,
                              pin_memory=info.device.type == "cuda")
        return loader, len(mine)

    def _train_epoch(self, epoch: int) -> EpochProgress:
        """Train one epoch (or its rest, on resume); returns this rank's sums over it."""
        state, cfg = self.state, self.cfg
        first_step = state.step if epoch == state.epoch else 0
        state.epoch, state.step = epoch, first_step
        loader, count = self._epoch_loader(epoch, first_step)
        progress = EpochProgress(_new_meter(self.data.train_info), np.zeros(3))
        if self.partial is not None and first_step:
            progress.load_saved(self.partial)
        self.partial = None
        self.model.train()
        bar = self._bar(count, epoch, first_step * self.local_bsz)
        elapsed, tick = progress.seconds, time.perf_counter()
        try:
            for batch, waited in timed_batches(loader):
                progress.data_seconds += waited
                self._step(batch, progress)
                if bar is not None:
                    bar.update(batch["size"] + len(batch["errors"]))
                    bar.set_postfix(loss=f"{progress.sums[0] / max(progress.sums[1], 1):.4f}",
                                    mIoU=f"{progress.meter.miou():.1f}", refresh=False)
                progress.seconds = elapsed + time.perf_counter() - tick
                inside = state.step < self.steps_per_epoch  # the epoch end writes last.pt anyway
                if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and inside:
                    self.dir.save_last(self.model, self.parts.optimizer, self.parts.scaler, state, progress)
                if self.stop_after_steps is not None and state.global_step >= self.stop_after_steps:
                    raise TrainingStopped(f"stopped after {state.global_step} steps (debug option)")
        finally:
            if bar is not None:
                bar.close()
        progress.seconds = elapsed + time.perf_counter() - tick
        return progress

    def _step(self, batch: dict[str, Any], progress: EpochProgress) -> None:
        if batch["errors"]:
            if not self.cfg.skip_bad_images:
                raise HmfssError(batch["errors"][0][1])
            progress.sums[2] += len(batch["errors"])
        loss, preds = train_step(self.parts, batch)
        problem = step_problem(loss, self.model)
        if any_rank(problem is not None, self.info):
            raise Diverged(diverged_message(problem or "the loss or a weight became non-finite on another process",
                                            self.state.epoch + 1, self.state.step + 1, self.cfg.lr))
        if preds is not None:
            progress.meter.add_batch(batch["class_id"].tolist(), preds, batch["query_mask"])
        progress.sums[0] += loss * batch["size"]
        progress.sums[1] += batch["size"]
        self.state.step += 1
        self.state.global_step += 1

    def _end_epoch(self, epoch: int, progress: EpochProgress) -> None:
        """Sum over ranks, validate, record the epoch and write best.pt / last.pt / history."""
        state, info = self.state, self.info
        sums = all_reduce_sum([np.asarray(progress.sums, dtype=np.float64)], info)[0]
        meter = progress.meter
        reduce_meter(meter, info)
        val = self._validate()
        improved = val["miou"] > state.best_miou
        if improved:
            state.best_miou, state.best_epoch = val["miou"], epoch + 1
        train_loss, eps_per_s = _rates(sums, progress.seconds)
        row = self._history_row(epoch, sums, meter, val, progress.seconds, progress.data_seconds)
        state.history.append(row)
        if improved:
            self.dir.save_best(self.model, epoch + 1, val)
        self.dir.write_history(state.history)
        state.epoch, state.step = epoch + 1, 0
        self.dir.save_last(self.model, self.parts.optimizer, self.parts.scaler, state)
        self.board.scalars({"trn/loss": train_loss, "trn/miou": meter.miou(), "trn/fb_iou": meter.fb_iou(),
                            "trn/episodes_per_s": eps_per_s, "val/miou": val["miou"], "val/fb_iou": val["fb_iou"]},
                           epoch + 1)
        self.log.info(f"epoch {epoch + 1}/{self.cfg.epochs}: loss {train_loss:.4f} train mIoU {meter.miou():.2f} | "
                      f"val mIoU {val['miou']:.2f} FB-IoU {val['fb_iou']:.2f}"
                      + (" (best)" if improved else f" (best {state.best_miou:.2f} @ {state.best_epoch})")
                      + f" | {eps_per_s:.2f} episodes/s, {progress.seconds:.0f}s train (of which {progress.data_seconds:.0f}s "
                      f"waiting for data) + {val['seconds']:.0f}s val"
                      + (f" | {int(sums[2])} episodes skipped (unreadable files)" if sums[2] else ""))

    def _history_row(self, epoch: int, sums: np.ndarray, meter: SegmentationMeter, val: dict[str, Any],
                     train_seconds: float, data_seconds: float) -> dict[str, Any]:
        state = self.state
        train_loss, eps_per_s = _rates(sums, train_seconds)
        row = {
            "epoch": epoch + 1, "step": state.global_step, "train_loss": round(train_loss, 6),
            "train_miou": round(meter.miou(), 4), "train_fb_iou": round(meter.fb_iou(), 4),
            "val_miou": round(val["miou"], 4), "val_fb_iou": round(val["fb_iou"], 4),
            "best_miou": round(state.best_miou, 4), "best_epoch": state.best_epoch, "lr": self.cfg.lr,
            "episodes": int(sums[1]), "episodes_per_s": round(eps_per_s, 3),
            "epoch_seconds": round(train_seconds + val["seconds"], 2), "data_wait_seconds": round(data_seconds, 2),
            "val_buckets": [b["miou"] for b in val["buckets"]],
        }
        if sums[2]:
            row["skipped"] = int(sums[2])
        return row

    def _validate(self) -> dict[str, Any]:
        """mIoU / FB-IoU of the validation episodes (sharded over ranks, summed)."""
        cfg, info = self.cfg, self.info
        tick = time.perf_counter()
        meter = _new_meter(self.data.val_info)
        failed = None
        try:
            if len(self.val_set):
                loader = episode_loader(self.val_set, max(1, cfg.bsz // info.world_size), cfg.workers)
                with autocast(info.device, cfg.amp):
                    evaluate(self.model, loader, meter, info.device, skip_bad=cfg.skip_bad_images,
                             progress=self._show_progress(), total=len(self.val_set))
        except HmfssError as exc:
            failed = str(exc)
        if any_rank(failed is not None, info):
            raise HmfssError(failed or "validation failed on another process")
        reduce_meter(meter, info)
        self.model.train()
        out = meter.summary()
        out["seconds"] = time.perf_counter() - tick
        return out

    def _show_progress(self) -> bool:
        return self.cfg.progress and self.info.is_main and sys.stderr.isatty()

    def _bar(self, total: int, epoch: int, done: int) -> tqdm | None:
        if not self._show_progress():
            return None
        return tqdm(total=total, initial=done, unit="ep", desc=f"epoch {epoch + 1}/{self.cfg.epochs}",
                    file=sys.stderr, dynamic_ncols=True, leave=False)
