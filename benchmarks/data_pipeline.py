"""Throughput of the in-memory loader against the per-image DataLoader pipeline.

Writes a synthetic CIFAR-100 training split (random pixels, the real pickle
layout ``cifar-100-python/{train,test,meta}``) to a temp dir, loads it through
``gkl.data.build_dataset("cifar100", ...)`` with the recipe augmentation, and
times full epochs of:

* per-image: torch DataLoader + torchvision RandomCrop(32, 4) + RandomHorizontalFlip
  + ToTensor + Normalize, with num_workers = 0 and 2;
* in-memory: ``build_loader(..., in_memory=True)`` (whole split as uint8 on the
  device, vectorised crop + flip + normalise per batch).

Run: ``.venv/bin/python benchmarks/data_pipeline.py [--images 10000] [--batch-size 128] [--epochs 2] [--threads N]``
Prints images/s and the ratio to the per-image num_workers=0 baseline.
"""

from __future__ import annotations

import argparse
import os
import pickle
import tempfile

import numpy as np
import torch

from _proc import add_device_option, checked_device, clock
from gkl.data import build_dataset, build_loader


def write_synthetic_cifar100(root: str, n_train: int, n_test: int, seed: int = 0) -> None:
    """Random CIFAR-100 split files in the official pickle layout under ``root/cifar-100-python``."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"fine_labels": rng.integers(0, 100, n).tolist(),
            b"coarse_labels": rng.integers(0, 20, n).tolist(),
            b"filenames": [b"synthetic.png"] * n,
            b"batch_label": name.encode(),
        }
        with open(os.path.join(folder, name), "wb") as handle:
            pickle.dump(batch, handle, protocol=4)
    with open(os.path.join(folder, "meta"), "wb") as handle:
        pickle.dump(
            {
                b"fine_label_names": [f"class{i}".encode() for i in range(100)],
                b"coarse_label_names": [f"super{i}".encode() for i in range(20)],
            },
            handle,
        )


def images_per_second(loader, epochs: int, device: torch.device) -> float:
    """Mean throughput over ``epochs`` full epochs, after one warm-up epoch, batches delivered on ``device``."""
    loader.set_epoch(0)
    for _ in loader:
        pass
    seen, start = 0, clock(device)
    for epoch in range(1, epochs + 1):
        loader.set_epoch(epoch)
        for images, _ in loader:
            images = images.to(device, non_blocking=True)  # as the engine moves a batch (no-op when there)
            seen += images.shape[0]
    return seen / (clock(device) - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads in this process (default: torch's own choice)"
    )
    add_device_option(parser)
    args = parser.parse_args()
    device = checked_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as root:
        write_synthetic_cifar100(root, args.images, 100)
        dataset = build_dataset("cifar100", root, train=True)  # recipe augmentation + normalisation
        runs = [
            ("per-image DataLoader, num_workers=0", dict(in_memory=False, num_workers=0)),
            ("per-image DataLoader, num_workers=2", dict(in_memory=False, num_workers=2)),
            (f"in-memory (device-side), {device}", dict(in_memory=True, device=device)),
        ]
        results = []
        for label, options in runs:
            loader = build_loader(dataset, batch_size=args.batch_size, train=True, seed=0, **options)
            results.append((label, images_per_second(loader, args.epochs, device)))

    base = results[0][1]
    print(
        f"CIFAR-100-format synthetic data: {args.images} images, batch {args.batch_size}, "
        f"{args.epochs} timed epochs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"{'pipeline':40s} {'images/s':>12s} {'vs nw=0':>9s} {'vs nw=2':>9s}")
    for label, rate in results:
        print(f"{label:40s} {rate:12.0f} {rate / base:8.2f}x {rate / results[1][1]:8.2f}x")


if __name__ == "__main__":
    main()
