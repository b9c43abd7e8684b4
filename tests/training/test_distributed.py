import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from hmfss.training.distributed import DistInfo, all_reduce_sum, rng_state, set_rng_state, shard

pytestmark = pytest.mark.slow  # seconds per test: scheduled first (tests/conftest.py)

REPO_SRC = Path(__file__).resolve().parents[2] / "src"


def test_shard_deals_round_robin_without_duplicates():
    items = list(range(11))
    parts = [shard(items, r, 3) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]  # equal shares, the tail of 2 dropped
    assert sorted(sum(parts, [])) == items[:9]
    loose = [shard(items, r, 3, equal=False) for r in range(3)]
    assert sorted(sum(loose, [])) == items  # validation: every episode exactly once
    assert shard(items, 0, 1) == items


def test_single_process_helpers_are_no_ops():
    info = DistInfo()
    a = np.arange(6.0).reshape(2, 3)
    assert np.array_equal(all_reduce_sum([a], info)[0], a)


def test_rng_state_round_trip():
    import random

    state = rng_state()
    draws = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == draws


SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    import hmfss.training.loop as T
    from hmfss.training.config import TrainConfig

    seen = []
    original = T.shard
    def recording_shard(items, rank, world, equal=True):
        out = original(items, rank, world, equal)
        if equal:
            seen.append([[e.query, e.supports[0]] for e in out])
        return out
    T.shard = recording_shard
    cfg = TrainConfig(**json.load(open(sys.argv[1])))
    result = T.train(cfg, console=False)
    rank = int(os.environ["RANK"])
    torch.save(result.state, os.path.join(sys.argv[2], f"rank{rank}.pt"))
    json.dump(seen, open(os.path.join(sys.argv[2], f"episodes{rank}.json"), "w"))
""")


def test_two_process_gloo_training_keeps_ranks_identical(tmp_path):
    from hmfss.data.splits import load_split
    from hmfss.data.synthetic import SyntheticParams, generate
    from hmfss.training.config import TrainConfig

    bench = tmp_path / "bench"
    generate(bench, SyntheticParams(classes=8, images_per_class=3, size=32, seed=1, test_ratio=0.25, val_ratio=0.25))
    cfg = TrainConfig(benchmark="fss", datapath=str(bench), splits=str(bench / "splits"), backbone="efficientnet-lite0",
                      img_size=32, bsz=4, epochs=2, episodes_per_epoch=8, val_episodes=5, workers=0,
                      logdir=str(tmp_path / "run"), progress=False, tensorboard=False, device="cpu")
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    (tmp_path / "script.py").write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=f"{REPO_SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(tmp_path / "script.py"), str(tmp_path / "cfg.json"), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    for key in a:
        assert torch.equal(a[key], b[key]), key
        assert torch.equal(a[key], last["model"][key]), key
    assert [row["epoch"] for row in last["history"]] == [1, 2]
    # each epoch's episodes were dealt to the two ranks without duplicates and none missing
    seen0 = json.loads((tmp_path / "episodes0.json").read_text())
    seen1 = json.loads((tmp_path / "episodes1.json").read_text())
    info = load_split("fss", bench / "splits", split="trn", datapath=bench)
    for epoch, (mine0, mine1) in enumerate(zip(seen0, seen1)):
        expected = [[e.query, e.supports[0]] for e in T_training_episodes(info, epoch)]
        assert len(mine0) == len(mine1) == 4
        assert sorted(map(tuple, mine0 + mine1)) == sorted(map(tuple, expected))
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "2 processes (gloo)" in log and "(2 per process)" in log
    assert last["world_size"] == 2 and len(last["rng"]) == 2


def T_training_episodes(info, epoch):
    from hmfss.data.sampling import training_episodes

    return training_episodes(info, 0, epoch, 8)
