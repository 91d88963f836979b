"""A few training steps on tiny phantom data lower the loss; an interrupted run resumes from its checkpoint."""

import pytest
import torch

from training.export import load_checkpoint
from training.train import main, phantom_shard

TINY = [
    "--no-lidc",
    "--phantoms",
    "64",
    "--val-phantoms",
    "16",
    "--batch-size",
    "16",
    "--widths",
    "4",
    "8",
    "--blocks",
    "1",
    "1",
    "--lr",
    "3e-3",
    "--threads",
    "1",
]


def test_training_lowers_the_loss_and_resumes(tmp_path):
    out = tmp_path / "ck"
    main(
        [
            *TINY,
            "--epochs",
            "4",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--stop-after",
            "2",
            "--dropout",
            "0.05",
        ]
    )
    assert len(torch.load(out / "last.pt", weights_only=False)["history"]) == 2
    main(
        [
            *TINY,
            "--epochs",
            "4",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--resume",
            str(out / "last.pt"),
        ]
    )
    state = torch.load(out / "last.pt", weights_only=False)
    history = state["history"]
    assert len(history) == 4 and state["config"]["widths"] == [4, 8] and state["config"]["dropout"] == 0.05
    assert state["provenance"]["torch_threads"] == 1 and state["provenance"]["cpu"]
    assert "git_commit" in state["provenance"]
    total = [sum(v for k, v in h.items() if k.startswith("loss_")) for h in history]
    assert total[-1] < total[0]
    model, _ = load_checkpoint(out / "last.pt")
    assert model.config.widths == [4, 8]


def test_torchrun_trains_data_parallel_on_two_processes(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "training.train",
        *TINY,
        "--epochs",
        "2",
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    state = torch.load(out / "last.pt", weights_only=False)
    assert len(state["history"]) == 2


@pytest.mark.parametrize("world", [1, 2, 3, 5, 10])
def test_every_rank_gets_its_share_of_the_elongated_phantoms(world):
    shards = [phantom_shard(1003, rank, world) for rank in range(world)]
    assert sorted(seed for shard in shards for seed in shard) == list(range(1003))
    elongated = [sum(seed % 5 == 0 for seed in shard) / len(shard) for shard in shards]
    assert max(elongated) - min(elongated) < 0.01


def test_a_wrong_data_root_fails_before_any_phantom_is_rendered(tmp_path):
    args = [a for a in TINY if a != "--no-lidc"]
    with pytest.raises(FileNotFoundError, match="lidc_voi/train.npz not found: --data-root"):
        main([*args, "--data-root", str(tmp_path / "nowhere"), "--cache-dir", str(tmp_path / "cache")])
    assert not (tmp_path / "cache").exists()
