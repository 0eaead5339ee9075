"""DDP over gloo with 2 CPU processes gives the same model as one process on the full batch,
and only rank 0 writes files.

Cost is mostly the two workers importing torch (and torch._dynamo, pulled in by the first
optimizer): about 30 CPU-seconds in all, so roughly 15-20 s on two idle cores.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from trainutil import BatchLoader, digits, mlp

from prunekit.train import TrainConfig, Trainer, cleanup_distributed, load_checkpoint

CFG = {"epochs": 2, "lr": 0.1, "schedule": "step", "device": "cpu", "progress": False}


def _run(out: Path, data: tuple[torch.Tensor, ...]) -> dict[str, float]:
    torch.manual_seed(0)
    xtr, ytr, xte, yte = data
    train = BatchLoader(xtr[:256], ytr[:256], 64, shuffle=True)
    test = BatchLoader(xte, yte, 90, shuffle=False)
    result = Trainer(mlp(), train, test, TrainConfig(**CFG)).fit(out)
    return result.final


def _worker(rank: int, world: int, port: int, root: str, data: tuple[torch.Tensor, ...]) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    try:
        final = _run(Path(root) / f"rank{rank}", data)
        # Every rank must report the same (all-reduced) metrics.
        Path(root, f"final{rank}.txt").write_text(
            repr(sorted((k, v) for k, v in final.items() if k not in ("seconds", "img_per_s")))
        )
    finally:
        cleanup_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_process_gloo_matches_single_process(tmp_path: Path) -> None:
    data = digits()  # loaded here: the workers then need not import scikit-learn
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), data), nprocs=2, join=True)
    assert (tmp_path / "rank0" / "metrics.jsonl").is_file()
    assert not (tmp_path / "rank1").exists(), "only rank 0 may write files"
    assert (tmp_path / "final0.txt").read_text() == (tmp_path / "final1.txt").read_text()
    ddp = load_checkpoint(tmp_path / "rank0" / "checkpoint")
    single_final = _run(tmp_path / "single", data)
    single = load_checkpoint(tmp_path / "single" / "checkpoint")
    for k, w in single["model"].items():  # grads averaged over 2×32 == mean over 64
        assert torch.allclose(ddp["model"][k], w, atol=1e-5), k
    assert ddp["step"] == single["step"] == 8  # same steps: the schedule is unchanged
    assert ddp["history"][-1]["val_acc"] == pytest.approx(single_final["val_acc"], abs=1 / 360)
    assert ddp["history"][-1]["train_loss"] == pytest.approx(single_final["train_loss"], rel=1e-4)
