"""Train Res-MTNet on phantoms and LIDC nodules. Single CPU process, or data-parallel under torchrun.

python -m training.train --data-root ../shared/datasets --out checkpoints --epochs 24
torchrun --standalone --nproc-per-node 2 -m training.train ...     # each rank trains on its shard
python -m training.train ... --resume checkpoints/last.pt
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from training.data.datasets import Batch, LidcSource, augment, phantom_set
from training.data.lidc import load_voi, split_by_patient
from training.defaults import ELONGATED_EVERY, PHANTOM_TEST_SEED, PREPROCESSING, VAL_FRACTION
from training.losses import TASK_WEIGHTS, task_losses, total_loss
from training.model import ResMTNet, ResMTNetConfig
from training.provenance import environment, patients_digest
from training.quick_eval import quick_metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=Path("../shared/datasets"))
    p.add_argument("--out", type=Path, default=Path("checkpoints"))
    p.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--phantoms", type=int, default=6000, help="phantom training examples")
    p.add_argument(
        "--elongated-every", type=int, default=ELONGATED_EVERY, help="every n-th phantom cigar-like (0: none)"
    )
    p.add_argument("--val-phantoms", type=int, default=300)
    p.add_argument("--lidc-repeats", type=int, default=3, help="LIDC passes per epoch")
    p.add_argument("--widths", type=int, nargs="+", default=[24, 48, 96])
    p.add_argument("--blocks", type=int, nargs="+", default=[1, 2, 2])
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--malignancy-weight", type=float, default=1.0, help="weight of the malignancy loss")
    p.add_argument("--malignancy-smoothing", type=float, default=0.0, help="label smoothing of malignancy")
    p.add_argument("--max-shift", type=int, default=0, help="random shift augmentation, in 2.5 mm voxels")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = all cores / ranks")
    p.add_argument("--resume", type=Path, default=None, help="continue the run saved in this checkpoint")
    p.add_argument("--stop-after", type=int, default=0, help="stop after this many epochs in this invocation")
    p.add_argument("--no-lidc", action="store_true", help="phantoms only (tests, smoke runs)")
    return p.parse_args(argv)


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    return (dist.get_rank() if world > 1 else 0), world


def phantom_shard(count: int, rank: int, world: int) -> list[int]:
    """This rank's training phantom seeds: a contiguous block, so every rank gets its share of each n-th (elongated)
    phantom whatever the world size (a stride of 5 would give one rank all of them)."""
    return list(range(count * rank // world, count * (rank + 1) // world))


def build_data(args: argparse.Namespace, rank: int, world: int):
    voi = None if args.no_lidc else load_voi(args.data_root)  # first: a wrong path fails before phantoms are rendered
    seeds = phantom_shard(args.phantoms, rank, world)
    workers = max((os.cpu_count() or 1) // world, 1)
    phantoms = phantom_set(seeds, PREPROCESSING, args.cache_dir, workers=workers, elongated_every=args.elongated_every)
    val_seeds = list(range(PHANTOM_TEST_SEED // 2, PHANTOM_TEST_SEED // 2 + args.val_phantoms))
    val_phantoms = None
    if rank == 0:
        val_phantoms = phantom_set(val_seeds, PREPROCESSING, args.cache_dir, elongated_every=args.elongated_every)
    lidc_train = lidc_val = None
    if voi is not None:
        train_mask, val_mask = split_by_patient(voi.patient_id, VAL_FRACTION, seed=0)
        train_idx = np.nonzero(train_mask)[0][rank::world]
        lidc_train = LidcSource(voi.subset(train_idx), PREPROCESSING, seed=args.seed + rank)
        lidc_val = LidcSource(voi.subset(np.nonzero(val_mask)[0]), PREPROCESSING, seed=1) if rank == 0 else None
    return phantoms, val_phantoms, lidc_train, lidc_val


def epoch_data(phantoms: Batch, lidc: LidcSource | None, repeats: int) -> Batch:
    parts = [phantoms]
    if lidc is not None:
        parts += [lidc.batch("random") for _ in range(repeats)]
    return Batch.concat(parts)


def task_weights(args: argparse.Namespace) -> dict[str, float]:
    return {**TASK_WEIGHTS, "malignancy": args.malignancy_weight}


def save_checkpoint(
    path: Path, model: ResMTNet, opt, sched, epoch: int, args, history: list, provenance: dict | None = None
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "config": model.config.to_dict(),
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "epoch": epoch,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "preprocessing": PREPROCESSING.model_dump(),
            "task_weights": task_weights(args),
            "malignancy_smoothing": args.malignancy_smoothing,
            "history": history,
            "provenance": provenance or {},
        },
        tmp,
    )
    tmp.replace(path)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    rank, world = _dist_info()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads or max((os.cpu_count() or 1) // world, 1))
    config = ResMTNetConfig(
        patch_size=PREPROCESSING.patch_size,
        spacing_mm=PREPROCESSING.spacing_mm,
        widths=args.widths,
        blocks=args.blocks,
        dropout=args.dropout,
    )
    start_epoch, history = 0, []
    state = torch.load(args.resume, weights_only=False) if args.resume else None
    if state:
        config = ResMTNetConfig(**state["config"])
    model = ResMTNet(config)
    phantoms, val_phantoms, lidc_train, lidc_val = build_data(args, rank, world)
    provenance = environment()  # of this invocation (a resumed run records where it finished)
    if lidc_val is not None:
        provenance["lidc_held_out_patients"] = patients_digest(lidc_val.voi.patient_id)
    n_per_epoch = len(phantoms) + (len(lidc_train.voi) * args.lidc_repeats if lidc_train else 0)
    if world > 1:  # every rank must take the same number of steps
        n = torch.tensor([n_per_epoch])
        dist.all_reduce(n, op=dist.ReduceOp.MIN)
        n_per_epoch = int(n)
    steps = max(n_per_epoch // args.batch_size, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps * args.epochs, pct_start=0.1)
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, history = state["epoch"] + 1, state["history"]
    weights = task_weights(args)
    gen = torch.Generator().manual_seed(args.seed * 1000 + rank)
    last = args.out / "last.pt"
    end_epoch = min(args.epochs, start_epoch + args.stop_after) if args.stop_after else args.epochs
    for epoch in range(start_epoch, end_epoch):
        gen.manual_seed(args.seed * 1000 + rank + epoch * 7919)
        data = epoch_data(phantoms, lidc_train, args.lidc_repeats)
        order = torch.randperm(len(data), generator=gen)[: steps * args.batch_size]
        model.train()
        t0, sums = time.time(), {}
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{args.epochs}", disable=rank != 0, leave=False)
        for step in bar:
            batch = data.index(order[step * args.batch_size : (step + 1) * args.batch_size])
            batch.image, batch.occupancy = augment(batch.image.float(), batch.occupancy.float(), gen, args.max_shift)
            out = model.forward_train(batch.image)
            losses = task_losses(out, batch, args.malignancy_smoothing)
            loss = total_loss(losses, weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1:  # data parallel: average gradients over ranks before every step
                for p in model.parameters():
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad /= world
            opt.step()
            sched.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        if rank == 0:
            line = {"epoch": epoch + 1, "seconds": round(time.time() - t0, 1)}
            line.update({f"loss_{k}": round(v / steps, 4) for k, v in sums.items()})
            line.update(quick_metrics(model, val_phantoms, lidc_val))
            history.append(line)
            print(json.dumps(line), flush=True)
            save_checkpoint(last, model, opt, sched, epoch, args, history, provenance)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return last


if __name__ == "__main__":
    main()
