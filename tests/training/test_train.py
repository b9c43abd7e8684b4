import json
import time
from dataclasses import replace

import pytest
import torch

from hmfss.data.sampling import heldout_split, training_episodes
from hmfss.data.synthetic import SyntheticParams, generate
from hmfss.errors import HmfssError
from hmfss.training.config import TrainConfig, read_config_file, resolve_config
from hmfss.training.loop import TrainingStopped, train
from hmfss.training.rundir import resume_config
from helpers import assert_same_tensors, one_thread, without_timing  # noqa: F401  (one_thread: autouse fixture)

pytestmark = pytest.mark.slow  # seconds per test: scheduled first (tests/conftest.py)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    generate(root, SyntheticParams(classes=10, images_per_class=4, size=48, seed=0, test_ratio=0.2, val_ratio=0.2))
    return root


def tiny_config(bench, logdir, **changes) -> TrainConfig:
    cfg = TrainConfig(benchmark="fss", datapath=str(bench), splits=str(bench / "splits"), backbone="efficientnet-lite0",
                      img_size=32, bsz=2, epochs=2, episodes_per_epoch=8, val_episodes=4, workers=0,
                      logdir=str(logdir), progress=False, tensorboard=False)
    return replace(cfg, **changes)


def test_a_few_steps_lower_the_loss_and_write_the_run(bench, tmp_path):
    # one fixed episode repeated: the head must fit it
    cfg = tiny_config(bench, tmp_path / "run", epochs=4, episodes_per_epoch=4, bsz=4, lr=3e-3)
    result = train(cfg, console=False)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0], losses
    run = tmp_path / "run"
    for name in ("best.pt", "last.pt", "config.yaml", "history.jsonl", "history.csv", "log.txt"):
        assert (run / name).is_file(), name
    # the resolved config: what was given, plus HSNet's recipe for what was not
    assert read_config_file(run / "config.yaml") == {
        **cfg.to_dict(), "optimizer": "adam", "weight_decay": 0.0, "augmentation": "none"}
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert (run / "history.csv").read_text().splitlines()[0].startswith("epoch,step,train_loss")
    log = (run / "log.txt").read_text()
    assert "validation: FSS val classes" in log and "episodes/s" in log
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["epoch"] == result.best_epoch and best["config"]["masking"] == "hm"


def test_best_checkpoint_serves_predict(bench, tmp_path):
    from hmfss import load_model

    result = train(tiny_config(bench, tmp_path / "run", epochs=1), console=False)
    model = load_model(result.run_dir / "best.pt")
    assert model.config.img_size == 32 and model.config.backbone == "efficientnet-lite0"
    with torch.no_grad():
        out = model.predict_mask(torch.randn(1, 3, 32, 32), torch.randn(1, 2, 3, 32, 32), torch.ones(1, 2, 32, 32))
    assert out.shape == (1, 32, 32)


def _weights(path):
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("checkpoint_every, stop_at", [(0, 5), (2, 7)])
def test_interrupted_then_resumed_equals_uninterrupted(bench, tmp_path, checkpoint_every, stop_at):
    # 2 epochs x 4 steps; the crash happens inside epoch 2 (after step 5 or 7)
    full = train(tiny_config(bench, tmp_path / "full", checkpoint_every=checkpoint_every), console=False)
    cfg = tiny_config(bench, tmp_path / "cut", checkpoint_every=checkpoint_every)
    with pytest.raises(TrainingStopped):
        train(cfg, console=False, stop_after_steps=stop_at)
    saved = _weights(tmp_path / "cut" / "last.pt")
    assert (saved["epoch"], saved["step"]) == ((1, 0) if checkpoint_every == 0 else (1, 2))
    resumed = train(resume_config(tmp_path / "cut"), resume=True, console=False)
    assert_same_tensors(full.state, resumed.state)
    a, b = _weights(tmp_path / "full" / "last.pt"), _weights(tmp_path / "cut" / "last.pt")
    assert_same_tensors(a["model"], b["model"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert without_timing(full.history) == without_timing(resumed.history)
    assert "resumed" in (tmp_path / "cut" / "log.txt").read_text()


def test_resume_can_extend_epochs_but_not_change_the_model(bench, tmp_path):
    train(tiny_config(bench, tmp_path / "run", epochs=1), console=False)
    cfg = resume_config(tmp_path / "run", {"epochs": 2})
    assert train(cfg, resume=True, console=False).epochs == 2
    with pytest.raises(HmfssError, match="cannot change 'masking'"):
        resume_config(tmp_path / "run", {"masking": "fm"})
    with pytest.raises(HmfssError, match="already holds a training run"):
        train(tiny_config(bench, tmp_path / "run"), console=False)
    with pytest.raises(HmfssError, match="not a training run"):
        resume_config(tmp_path)


def test_training_episodes_are_seeded_per_epoch_and_cover_the_queries(bench):
    from hmfss.data.splits import load_split

    info = load_split("fss", bench / "splits", split="trn", datapath=bench)
    a = training_episodes(info, 0, 0, len(info.entries))
    assert a == training_episodes(info, 0, 0, len(info.entries))
    assert a != training_episodes(info, 0, 1, len(info.entries))
    assert sorted(e.query for e in a) == sorted(n for n, _ in info.entries)  # a permutation of the queries
    assert all(e.supports[0] != e.query and e.supports[0] in info.classwise[e.class_id] for e in a)
    assert len(training_episodes(info, 0, 0, 50)) == 50


def test_heldout_split_takes_training_classes_out_of_training(bench, tmp_path):
    from hmfss.data.splits import load_split

    info = load_split("fss", bench / "splits", split="trn", datapath=bench)
    trn, held = heldout_split(info, 0.2, 0)
    trn_classes = {c for _, c in trn.entries}
    held_classes = {c for _, c in held.entries}
    assert held_classes and not trn_classes & held_classes
    assert trn_classes | held_classes == {c for _, c in info.entries}
    assert heldout_split(info, 0.2, 0)[1].entries == held.entries
    result = train(tiny_config(bench, tmp_path / "run", epochs=1, val_split="heldout"), console=False)
    assert "validation: held-out training classes" in (result.run_dir / "log.txt").read_text()


def test_corrupt_config_and_missing_weights_are_clear_errors(bench, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\nbsz: 3\n")
    with pytest.raises(HmfssError, match="not valid YAML") as exc:
        resolve_config(bad)
    assert "\n" not in str(exc.value)
    (tmp_path / "bad.json").write_text("{\"lr\": 0.1,")
    with pytest.raises(HmfssError, match="not valid JSON"):
        resolve_config(tmp_path / "bad.json")
    (tmp_path / "typo.yaml").write_text("learning_rate: 0.1\n")
    with pytest.raises(HmfssError, match="unknown setting 'learning_rate'"):
        resolve_config(tmp_path / "typo.yaml")
    (tmp_path / "type.yaml").write_text("bsz: many\n")
    with pytest.raises(HmfssError, match="bsz must be int"):
        resolve_config(tmp_path / "type.yaml")
    with pytest.raises(HmfssError, match="config file not found"):
        resolve_config(tmp_path / "nope.yaml")
    cfg = tiny_config(bench, tmp_path / "w", backbone_weights=str(tmp_path / "missing.pth"))
    with pytest.raises(HmfssError, match="backbone weights file not found"):
        train(cfg, console=False)


def test_config_file_then_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: 0.0005\nbsz: 8\nmasking: fm\n")
    cfg = resolve_config(tmp_path / "c.yaml", {"bsz": 4})
    assert (cfg.lr, cfg.bsz, cfg.masking, cfg.arch) == (0.0005, 4, "fm", "hsnet")
    (tmp_path / "c.json").write_text(json.dumps({"epochs": 3, "val_split": "heldout"}))
    assert resolve_config(tmp_path / "c.json").val_split == "heldout"
    with pytest.raises(HmfssError, match="val_split must be one of"):
        resolve_config(None, {"val_split": "train"})


# ---- per-head recipes (optimiser, learning rates, augmentation, image size of the originals) -----


def _resolved(**kw):
    from hmfss.training.config import resolve_recipe

    return resolve_recipe(TrainConfig(**kw))


def test_recipes_resolve_to_the_original_settings():
    hsnet = _resolved(arch="hsnet", benchmark="pascal")
    assert (hsnet.optimizer, hsnet.lr, hsnet.weight_decay, hsnet.decoder_lr, hsnet.augmentation, hsnet.img_size) == \
        ("adam", 1e-3, 0.0, None, "none", 400)
    asnet = _resolved(arch="asnet", benchmark="coco")
    assert (asnet.optimizer, asnet.lr, asnet.weight_decay, asnet.decoder_lr, asnet.augmentation, asnet.img_size) == \
        ("adam", 1e-3, 0.0, None, "none", 400)
    for bench, size in (("pascal", 473), ("coco", 417), ("fss", 473), ("folder", 473)):
        vat = _resolved(arch="vat", benchmark=bench)
        assert (vat.optimizer, vat.lr, vat.weight_decay, vat.decoder_lr, vat.decoder_weight_decay) == \
            ("adamw", 5e-4, 0.0, 5e-4, 0.0)
        assert vat.img_size == size
        assert vat.model_options == {"benchmark": "pascal" if bench == "folder" else bench}
        assert vat.augmentation["p"] == 0.2 and vat.augmentation["posterize_bits"] == 4
    # resolving twice changes nothing (a resumed run rebuilds the same optimiser)
    from hmfss.training.config import resolve_recipe

    vat = _resolved(arch="vat", benchmark="coco")
    assert resolve_recipe(vat) == vat


def test_flags_override_the_recipe():
    vat = _resolved(arch="vat", benchmark="coco", lr=1e-4, img_size=321, augmentation="none",
                    model_options={"benchmark": "fss"})
    assert (vat.lr, vat.decoder_lr, vat.img_size, vat.augmentation, vat.model_options) == \
        (1e-4, 1e-4, 321, "none", {"benchmark": "fss"})
    vat = _resolved(arch="vat", decoder_lr=2e-4, weight_decay=0.01, optimizer="adam")
    assert (vat.optimizer, vat.lr, vat.decoder_lr, vat.weight_decay, vat.decoder_weight_decay) == \
        ("adam", 5e-4, 2e-4, 0.01, 0.01)
    hsnet = _resolved(arch="hsnet", augmentation={"p": 0.5, "ops": ["solarize"]}, optimizer="adamw")
    assert hsnet.augmentation["p"] == 0.5 and hsnet.augmentation["ops"] == ["solarize"]
    assert hsnet.optimizer == "adamw" and hsnet.decoder_lr is None
    with pytest.raises(HmfssError, match="unknown arch 'unet'"):
        _resolved(arch="unet")
    for bad, message in (({"optimizer": "sgd"}, "optimizer must be one of adam, adamw"),
                         ({"lr": 0.0}, "lr must be positive"),
                         ({"weight_decay": -1.0}, "weight_decay must not be negative"),
                         ({"augmentation": {"p": 2}}, "augmentation p must be in")):
        with pytest.raises(HmfssError, match=message.replace("(", r"\(")):
            resolve_config(None, bad)


def test_optimizers_of_each_head():
    from hmfss import build_model
    from hmfss.training.optim import build_optimizer

    vat = build_model("vat", "efficientnet-lite0", "hm")
    opt = build_optimizer(vat, _resolved(arch="vat"))
    assert type(opt) is torch.optim.AdamW and len(opt.param_groups) == 2
    head = vat.head
    decoder = {id(p) for m in (head.decoder_stages, head.decoder) for p in m.parameters()}
    assert {id(p) for p in opt.param_groups[1]["params"]} == decoder
    rest = {id(p) for p in head.parameters()} - decoder
    assert {id(p) for p in opt.param_groups[0]["params"]} == rest
    assert [(g["lr"], g["weight_decay"]) for g in opt.param_groups] == [(5e-4, 0.0), (5e-4, 0.0)]
    asnet = build_model("asnet", "efficientnet-lite0", "hm")
    opt = build_optimizer(asnet, _resolved(arch="asnet"))
    assert type(opt) is torch.optim.Adam and len(opt.param_groups) == 1
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["weight_decay"] == 0.0
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in asnet.head.parameters()}


def test_augmented_training_resumes_exactly(bench, tmp_path):
    aug = {"p": 0.5}
    plain = train(tiny_config(bench, tmp_path / "plain", epochs=1), console=False)
    full = train(tiny_config(bench, tmp_path / "full", augmentation=aug, checkpoint_every=2), console=False)
    assert any(not torch.equal(plain.state[k], full.state[k]) for k in plain.state)  # the images did change
    assert "augmentation photometric, each op with p 0.5" in (tmp_path / "full" / "log.txt").read_text()
    cfg = tiny_config(bench, tmp_path / "cut", augmentation=aug, checkpoint_every=2, workers=1)
    with pytest.raises(TrainingStopped):
        train(cfg, console=False, stop_after_steps=6)
    resumed = train(resume_config(tmp_path / "cut"), resume=True, console=False)
    assert_same_tensors(full.state, resumed.state)


def test_resume_refuses_an_optimizer_of_another_kind(bench, tmp_path):
    train(tiny_config(bench, tmp_path / "run", epochs=1), console=False)
    path = tmp_path / "run" / "config.yaml"
    path.write_text(path.read_text().replace("optimizer: adam\n", "optimizer: adamw\n"))
    with pytest.raises(HmfssError, match="holds Adam optimizer state, but the run's config gives AdamW"):
        train(resume_config(tmp_path / "run", {"epochs": 2}), resume=True, console=False)


def test_resolve_parses_the_augmentation_once_into_its_typed_form():
    from hmfss.heads.recipe import PhotometricAugmentation
    from hmfss.training.config import resolve

    vat = resolve(TrainConfig(arch="vat", augmentation={"p": 0.5, "ops": ["solarize"]}))
    assert vat.augmentation == PhotometricAugmentation(p=0.5, ops=("solarize",))
    assert vat.config.augmentation["ops"] == ["solarize"]  # the YAML form config.yaml stores
    assert resolve(vat.config) == vat
    assert resolve(TrainConfig(arch="hsnet")).augmentation is None


def test_optimizer_needs_a_resolved_config():
    from hmfss import build_model
    from hmfss.training.optim import build_optimizer

    with pytest.raises(ValueError, match="resolved config"):
        build_optimizer(build_model("hsnet", "efficientnet-lite0", "hm"), TrainConfig())


def test_training_meter_scores_a_batch_like_single_episodes():
    from hmfss.evaluation.metrics import SegmentationMeter

    preds = torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 0]]])
    gts = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]])
    meter = SegmentationMeter([0, 1], 2)
    meter.add_batch([0, 1], preds, gts)
    # episode 0: fg 1 of 2 pixels, bg 2 of 3; episode 1: nothing found, bg 3 of 4
    assert meter.inter.T.tolist() == [[2.0, 1.0], [3.0, 0.0]]
    assert meter.union.T.tolist() == [[3.0, 2.0], [4.0, 1.0]]
    assert meter.bucket_episodes[3].tolist() == [1, 1]  # 50 % and 25 % foreground
    saved = meter.arrays()
    fresh = SegmentationMeter([0, 1], 2)
    fresh.load_arrays({k: torch.as_tensor(v) for k, v in saved.items()})
    assert fresh.summary() == meter.summary()


# ---- divergence, runs stopped before their first checkpoint, stale temp files ---------------------


def _poisoned_step(monkeypatch, at_step: int, poison: str):
    """Make the ``at_step``-th optimisation step (1-based, of the process) diverge: a NaN loss,
    or an infinite weight after a step whose loss is finite."""
    from hmfss.training import loop

    real, calls = loop.train_step, []

    def step(parts, batch):
        loss, preds = real(parts, batch)
        calls.append(1)
        if len(calls) == at_step:
            if poison == "loss":
                return float("nan"), preds
            with torch.no_grad():
                next(p for p in parts.model.parameters() if p.requires_grad).view(-1)[0] = float("inf")
        return loss, preds

    monkeypatch.setattr(loop, "train_step", step)


@pytest.mark.parametrize("poison, problem", [("loss", "the loss is nan"), ("weight", "a weight became NaN or infinite")])
def test_divergence_stops_the_run_and_never_reaches_a_checkpoint(bench, tmp_path, monkeypatch, poison, problem):
    from hmfss.training.divergence import Diverged

    good = train(tiny_config(bench, tmp_path / "good", epochs=1), console=False)
    _poisoned_step(monkeypatch, 6, poison)  # epoch 2, its 2nd step (4 steps per epoch)
    with pytest.raises(Diverged, match=f"training diverged at epoch 2 step 2: {problem} \\(lr 0.001\\)"):
        train(tiny_config(bench, tmp_path / "run"), console=False)
    run = tmp_path / "run"
    last, best = _weights(run / "last.pt"), _weights(run / "best.pt")
    assert (last["epoch"], last["step"], best["epoch"]) == (1, 0, 1)  # what epoch 1 wrote, nothing later
    assert_same_tensors(good.state, last["model"])
    assert_same_tensors(good.state, best["model"])
    assert [json.loads(row)["epoch"] for row in (run / "history.jsonl").read_text().splitlines()] == [1]
    assert f"stopped: training diverged at epoch 2 step 2: {problem}" in (run / "log.txt").read_text()


def test_resume_before_the_first_checkpoint_starts_from_the_beginning(bench, tmp_path):
    full = train(tiny_config(bench, tmp_path / "full"), console=False)
    run = tmp_path / "cut"
    with pytest.raises(TrainingStopped):
        train(tiny_config(bench, run), console=False, stop_after_steps=3)
    assert (run / "config.yaml").is_file() and not (run / "last.pt").exists()
    with pytest.raises(HmfssError, match="already holds a training run; continue it with --resume"):
        train(tiny_config(bench, run), console=False)
    stale = [".last.pt.ab_12cde.tmp", ".config.yaml.zz9abcde.tmp"]
    for name in stale + ["notes.tmp", ".last.pt.tmp"]:  # the last two are not hmfss temp names
        (run / name).write_text("x")
    resumed = train(resume_config(run), resume=True, console=False)
    assert_same_tensors(full.state, resumed.state)
    log = (run / "log.txt").read_text()
    assert "no last.pt in" in log and "starting the run from the beginning" in log
    assert "removed 2 temp file(s) of interrupted writes: " in log
    assert not any((run / name).exists() for name in stale)
    assert (run / "notes.tmp").exists() and (run / ".last.pt.tmp").exists()


def test_train_accepts_resolved_settings_and_resolves_nothing_again(bench, tmp_path, monkeypatch):
    from hmfss.training import loop
    from hmfss.training.config import resolve

    settings = resolve(tiny_config(bench, tmp_path / "run", epochs=1, augmentation={"p": 0.5}))
    monkeypatch.setattr(loop, "resolve", lambda cfg: pytest.fail("resolved a second time"))
    result = train(settings, console=False)
    assert result.epochs == 1
    assert "augmentation photometric, each op with p 0.5" in (tmp_path / "run" / "log.txt").read_text()


def test_amp_on_a_cpu_that_emulates_bf16_is_logged_as_slower(bench, tmp_path, monkeypatch):
    monkeypatch.setattr("hmfss.training.loop.bf16_warning", lambda device: "bf16 is emulated on this CPU: slower")
    train(tiny_config(bench, tmp_path / "run", epochs=1, episodes_per_epoch=2, amp=True), console=False)
    assert "bf16 is emulated on this CPU: slower" in (tmp_path / "run" / "log.txt").read_text()


def test_the_time_spent_waiting_for_data_is_recorded(bench, tmp_path, monkeypatch):
    """A loader that takes 0.25 s per episode (no worker processes: the step waits for all of it)
    makes the epoch's recorded data wait at least that, and the rest of the epoch's time apart."""
    from hmfss.data.dataset import EpisodeDataset

    load = EpisodeDataset.load

    def slow_load(self, index):
        time.sleep(0.25)
        return load(self, index)

    monkeypatch.setattr(EpisodeDataset, "load", slow_load)
    result = train(tiny_config(bench, tmp_path / "run", epochs=1, episodes_per_epoch=4, val_episodes=2),
                   console=False)
    (row,) = result.history
    # 4 training episodes; the 2 validation episodes are loaded outside the training loop
    assert 1.0 <= row["data_wait_seconds"] < 1.0 + 0.5 < row["epoch_seconds"]
    assert "(of which 1s waiting for data)" in (tmp_path / "run" / "log.txt").read_text()
    assert (tmp_path / "run" / "history.csv").read_text().splitlines()[0].endswith(",data_wait_seconds")


def test_timed_batches_measures_only_the_wait_for_each_batch():
    from hmfss.training.data import timed_batches

    def loader():
        for i in range(3):
            time.sleep(0.1 * i)
            yield i

    seen = []
    for batch, waited in timed_batches(loader()):
        time.sleep(0.15)  # the step's own time is not the loader's
        seen.append((batch, waited))
    assert [b for b, _ in seen] == [0, 1, 2]
    # at least the loader's sleep, and none of the step's 0.15 s
    assert all(0.1 * i <= w < 0.1 * i + 0.12 for i, (_, w) in enumerate(seen)), seen
