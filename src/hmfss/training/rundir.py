"""The run directory of a training run: what it holds, how it is written and resumed.

::

    RUN/config.yaml      resolved configuration (``--resume RUN`` reads it back)
    RUN/log.txt          plain text log (appended on resume)
    RUN/history.jsonl    one JSON object per epoch; RUN/history.csv the same as a table
    RUN/best.pt          best validation mIoU so far (an hmfss checkpoint: ``hmfss predict``/``test``)
    RUN/last.pt          latest state: model, optimizer, epoch/step, best score, RNG states
    RUN/tb/              TensorBoard scalars (when tensorboard is installed)

Only rank 0 writes files. ``last.pt`` holds every rank's RNG states and, when written inside
an epoch, every rank's running sums of that epoch, so that a resumed run goes on exactly.

After a crash: every file is written atomically (temp file + rename); the temp files of writes
a crash interrupted are removed when the run starts or resumes. Resuming a run that was
stopped before its first ``last.pt`` (it holds config.yaml only) starts it from the beginning.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hmfss.atomic import remove_stale_temps
from hmfss.checkpoint import read_checkpoint, save_checkpoint
from hmfss.errors import HmfssError
from hmfss.evaluation.metrics import SegmentationMeter
from hmfss.training.config import TrainConfig, read_config_file, validate, write_config
from hmfss.training.distributed import (
    DistInfo,
    all_gather_objects,
    broadcast_object,
    on_main_rank,
    rng_state,
    seed_everything,
    set_rng_state,
)
from hmfss.training.divergence import finite_weights
from hmfss.training.history import history_texts, holds, write_history
from hmfss.training.optim import check_optimizer_state
from hmfss.weights import load_state

LOGGER_NAME = "hmfss.train"
# the history fields that measure time (they differ between otherwise identical runs)
TIMING_FIELDS = ("episodes_per_s", "epoch_seconds", "data_wait_seconds")

# what a last.pt holds beside the model (a best.pt has none of it)
LAST_ENTRIES = {"optimizer": dict, "epoch": int, "step": int, "global_step": int, "best_miou": float,
                "best_epoch": int}

# settings that may differ between a run and its resumption
RESUMABLE_OVERRIDES = frozenset({
    "epochs", "workers", "device", "amp", "compile", "checkpoint_every", "tensorboard", "progress",
    "skip_bad_images", "datapath", "splits",
})
# config.yaml settings last.pt need not agree with: the resumable ones, the folder, and the initial
# backbone weights (last.pt replaces them; the file may have moved since)
UNCHECKED_ON_RESUME = RESUMABLE_OVERRIDES | {"logdir", "backbone_weights"}

# the files of a run besides last.pt (each must be a file when it exists)
RUN_FILES = ("config.yaml", "log.txt", "history.jsonl", "history.csv", "best.pt")


@dataclass
class RunState:
    """Where a run stands: finished epochs, steps into the next one, best score, history."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    best_miou: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class EpochProgress:
    """This rank's running sums of an unfinished epoch."""

    meter: SegmentationMeter
    sums: np.ndarray  # (3,): loss x episodes, episodes, skipped episodes
    seconds: float = 0.0
    data_seconds: float = 0.0  # of ``seconds``, waiting for the data loader

    def to_saved(self) -> dict[str, Any]:
        return {"sums": torch.as_tensor(self.sums), "seconds": self.seconds, "data_seconds": self.data_seconds,
                "meter": {n: torch.as_tensor(a) for n, a in self.meter.arrays().items()}}

    def load_saved(self, saved: dict[str, Any]) -> None:
        self.sums = np.asarray(saved["sums"], dtype=np.float64)
        self.seconds = float(saved["seconds"])
        self.data_seconds = float(saved.get("data_seconds", 0.0))  # absent before it was measured
        self.meter.load_arrays(saved["meter"])


# ---- configuration of an existing run ------------------------------------------------------------


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The config.yaml of an existing run directory, with ``logdir`` pointing at it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise HmfssError(f"run directory not found: {run_dir}")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise HmfssError(f"{run_dir} is not a training run (no config.yaml); a run stopped before it wrote "
                         f"config.yaml starts again with its original command")
    cfg = TrainConfig(**read_config_file(path))
    cfg.logdir = str(run_dir)
    return cfg


def resume_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The config of an existing run with allowed ``overrides`` (epochs, workers, ...) applied."""
    saved = load_run_config(run_dir)
    changed = {k: v for k, v in (overrides or {}).items() if getattr(saved, k) != v}
    bad = sorted(k for k in changed if k not in RESUMABLE_OVERRIDES and k != "logdir")
    if bad:
        raise HmfssError(
            f"cannot change {bad[0]!r} when resuming (the run was made with {bad[0]}={getattr(saved, bad[0])!r}); "
            f"start a new run instead"
        )
    cfg = replace(saved, **{k: v for k, v in changed.items() if k != "logdir"})
    validate(cfg)
    return cfg


# ---- the directory -------------------------------------------------------------------------------


class RunDir:
    """Files of one run as seen by one process (only rank 0 writes)."""

    def __init__(self, path: Path, cfg: TrainConfig, info: DistInfo):
        self.path = Path(path)
        self.cfg = cfg
        self.info = info

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    def check(self, resume: bool) -> bool:
        """Check that the directory fits a new run (or, with ``resume``, holds one); changes
        nothing. Returns whether there is a last.pt to resume from: resuming a run stopped
        before its first checkpoint starts it from the beginning."""
        if self.path.exists() and not self.path.is_dir():
            raise HmfssError(f"run directory {self.path} is a file, not a folder")
        for name in RUN_FILES:
            if (self.path / name).exists() and not (self.path / name).is_file():
                raise HmfssError(f"{self.path / name} is not a file (a folder?); the run directory is damaged")
        if resume:
            if self.last.exists() and not self.last.is_file():
                raise HmfssError(f"cannot resume: {self.last} is not a file")
        elif self.last.is_file() or (self.path / "config.yaml").is_file():
            raise HmfssError(f"{self.path} already holds a training run; continue it with --resume "
                             f"{self.path} or choose another --logdir")
        return self.last.is_file()

    def create(self) -> list[Path]:
        """Create the directory and remove the temp files of writes a crash interrupted (this
        run is the folder's only writer). Returns the removed files."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HmfssError(f"cannot create run directory {self.path}: {exc.strerror or exc}") from None
        return remove_stale_temps(self.path, older_than=0.0)

    def write_config(self) -> None:
        if self.info.is_main:
            write_config(self.cfg, self.path / "config.yaml")

    def write_history(self, history: list[dict[str, Any]]) -> None:
        if self.info.is_main:
            write_history(self.path, history)

    def save_best(self, model: torch.nn.Module, epoch: int, val: dict[str, Any]) -> None:
        if self.info.is_main:
            save_checkpoint(model, self.path / "best.pt", epoch=epoch, val_miou=val["miou"],
                            val_fb_iou=val["fb_iou"], train_config=self.cfg.to_dict())

    def save_last(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                  state: RunState, progress: EpochProgress | None = None) -> None:
        """Write last.pt: ``progress`` is this rank's unfinished epoch (None at an epoch end)."""
        local = progress.to_saved() if state.step else None
        gathered = all_gather_objects((rng_state(), local), self.info)
        if not self.info.is_main:
            return
        save_checkpoint(model, self.last, optimizer=optimizer.state_dict(),
                        optimizer_kind=type(optimizer).__name__,
                        scaler=scaler.state_dict() if scaler.is_enabled() else None,
                        epoch=state.epoch, step=state.step, global_step=state.global_step,
                        best_miou=state.best_miou, best_epoch=state.best_epoch, history=state.history,
                        rng=[g[0] for g in gathered], world_size=self.info.world_size,
                        partial=[g[1] for g in gathered] if state.step else None,
                        sampler={"seed": self.cfg.seed, "epoch": state.epoch, "step": state.step,
                                 "kind": "seeded-permutation"},
                        train_config=self.cfg.to_dict())

    def load_last(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                  log: logging.Logger) -> tuple[RunState, dict[str, Any] | None]:
        """Restore model, optimizer, scaler and this rank's RNG states from last.pt.

        Returns the run state and this rank's saved epoch progress (or None).
        """
        saved = read_checkpoint(self.last) if self.info.is_main else None
        saved = broadcast_object(saved, self.info)
        check_last(saved, self.last)
        check_same_model(saved, model.config.to_dict(), self.last)
        on_main_rank(lambda: check_best_exists(saved, self.best), self.info)
        load_state(model, saved["model"], self.last)
        if not finite_weights(model, trainable_only=False):
            raise HmfssError(f"cannot resume: {self.last} holds NaN or infinite weights")
        check_optimizer_state(optimizer, saved, self.last)
        check_same_settings(saved, self.cfg.to_dict(), self.last)
        optimizer.load_state_dict(saved["optimizer"])
        if saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        state = RunState(int(saved["epoch"]), int(saved["step"]), int(saved["global_step"]),
                         float(saved["best_miou"]), int(saved["best_epoch"]), list(saved.get("history", [])))
        rngs = saved.get("rng") or []
        same_world = int(saved.get("world_size", 1)) == self.info.world_size and len(rngs) == self.info.world_size
        if state.step and not same_world:
            raise HmfssError(f"{self.last} was written inside an epoch by {saved.get('world_size', 1)} processes; "
                             f"resume it with the same number")
        if same_world:
            set_rng_state(rngs[self.info.rank])
        else:
            log.info("world size changed since the checkpoint: RNG streams are re-seeded")
            seed_everything(self.cfg.seed + 1000 * state.epoch + self.info.rank)
        partial = saved["partial"][self.info.rank] if saved.get("partial") else None
        if self.info.is_main:
            self._restore_history(state.history, log)
        return state, partial

    def _restore_history(self, history: list[dict[str, Any]], log: logging.Logger) -> None:
        """Rewrite history.jsonl / history.csv from last.pt's history where they differ from it
        (edited, damaged, or written by an epoch end whose last.pt a crash prevented)."""
        stale = [name for name, text in history_texts(history).items() if not holds(self.path / name, text)]
        if stale:
            write_history(self.path, history)
            log.info(f"rewrote {' and '.join(stale)} from {self.last.name} ({len(history)} finished "
                     f"epoch(s)): they did not match it")


def check_last(saved: dict[str, Any], path: Path) -> None:
    """``saved`` must be what :meth:`RunDir.save_last` writes: the model's tensors and the run's
    state (a best.pt, for one, has no optimizer state)."""
    model = saved.get("model")
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise HmfssError(f"cannot resume: {path} is not the last.pt of a training run (no model weights)")
    for key, kind in LAST_ENTRIES.items():
        value = saved.get(key)
        if key not in saved or not isinstance(value, (int, float) if kind is float else kind) \
                or isinstance(value, bool):
            raise HmfssError(f"cannot resume: {path} is not the last.pt of a training run ({key!r} entry "
                             f"missing or invalid; a best.pt copied over it?)")
    if not _is_history(saved.get("history", [])):
        raise HmfssError(f"cannot resume: {path} is damaged (its 'history' entry is not a list of epoch records)")


def _is_history(history: Any) -> bool:
    """Whether ``history`` is what the trainer stores: a list of JSON-ready dicts with an int epoch."""
    if not isinstance(history, list) or not all(isinstance(row, dict) and type(row.get("epoch")) is int
                                                for row in history):
        return False
    try:
        json.dumps(history)
    except (TypeError, ValueError):  # tensors or other objects a weights-only load still allows
        return False
    return True


def _mismatch(saved: dict[str, Any], current: dict[str, Any], ignore: frozenset[str] | set[str] = frozenset()
              ) -> tuple[str, Any, Any] | None:
    """(name, saved value, current value) of the first setting both record with different values."""
    for name in sorted(set(saved) & set(current) - set(ignore)):
        if saved[name] != current[name]:
            return name, saved[name], current[name]
    return None


def check_same_model(saved: dict[str, Any], model_config: dict[str, Any], path: Path) -> None:
    """The model last.pt was trained as (its ``config``) must be the one config.yaml builds: an
    edited ``masking: hm`` -> ``fm`` would otherwise go on training hm weights as fm."""
    recorded = saved.get("config")
    found = _mismatch(recorded, model_config) if isinstance(recorded, dict) else None
    if found is not None:
        name, old, new = found
        raise HmfssError(f"cannot resume: {path} holds a model with {name} {old!r}, but {path.parent / 'config.yaml'} "
                         f"gives {name} {new!r}; restore config.yaml or start a new run")


def check_same_settings(saved: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    """The run's settings recorded in last.pt (``train_config``) must match config.yaml except
    those a resumption may change (:data:`UNCHECKED_ON_RESUME`)."""
    recorded = saved.get("train_config")
    found = _mismatch(recorded, config, UNCHECKED_ON_RESUME) if isinstance(recorded, dict) else None
    if found is not None:
        name, old, new = found
        raise HmfssError(f"cannot resume: {path} was trained with {name}={old!r}, but {path.parent / 'config.yaml'} "
                         f"gives {name}={new!r}; restore config.yaml or start a new run")


def check_best_exists(saved: dict[str, Any], best: Path) -> None:
    """A run that recorded a best epoch must still hold its best.pt (nothing else can rebuild it)."""
    if int(saved["best_epoch"]) > 0 and not best.is_file():
        raise HmfssError(f"cannot resume: {best} is missing (the run's best val mIoU "
                         f"{float(saved['best_miou']):.2f} was at epoch {int(saved['best_epoch'])}); "
                         f"put it back or start a new run")


# ---- log and TensorBoard -------------------------------------------------------------------------


def make_logger(run_dir: Path, info: DistInfo, console: bool) -> logging.Logger:
    """Rank 0: log.txt (timestamped) and, with ``console``, stderr; other ranks: nothing."""
    logger = logging.getLogger(f"{LOGGER_NAME}.{id(run_dir)}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    close_logger(logger)
    if info.is_main:
        try:
            file_handler = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
        except OSError as exc:
            raise HmfssError(f"cannot write the run's log {run_dir / 'log.txt'}: {exc.strerror or exc}") from None
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(file_handler)
        if console:
            stream = logging.StreamHandler(sys.stderr)
            stream.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(stream)
    else:
        logger.addHandler(logging.NullHandler())
    return logger


def log_to_file(logger: logging.Logger, message: str) -> None:
    """Write ``message`` to log.txt only (the caller reports it on the console itself)."""
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


class Board:
    """TensorBoard scalars when ``torch.utils.tensorboard`` imports; otherwise nothing."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.writer = None
        if not enabled:
            return
        try:  # optional dependency: imported only when asked for
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
