"""Training throughput of the ResNet adapters' loop against a bare PyTorch loop.

Both loops train the same model (``adapters/resnet.py``'s ``build_model``) on the same uint8
images with the same batch size, optimiser, and (on CUDA) the same mixed precision and
channels-last layout. The bare loop is the minimum: the whole training set normalised to float
once, on the device, taken in order, batch by batch. The adapter's loop (``Trainer.train_epoch``)
shuffles, indexes uint8 batches on the device, normalises (and, at 224, upscales) each batch,
and goes through the gradient scaler. Runs alternate between the two loops; each run times
``--batches`` batches after ``--warmup`` untimed ones, synchronising the GPU at both ends; the
order of the two loops flips from one repeat to the next (whichever runs first after the switch
pays for the caches the other one filled). The JSON holds every run, the medians and the best.

Run it with an interpreter that has torch, torchvision, numpy and pluggy, from the repository
root (it imports ``decathlon`` and ``adapters/resnet.py`` from here)::

    ENV=~/.cache/decathlon/envs/<hash>/bin/python    # python -m decathlon setup resnet18_28
    $ENV benchmarks/resnet_throughput.py --device cpu --variants resnet18_28 --batches 8 \
        --repeats 3 --out-dir /tmp/bench

    python3 benchmarks/resnet_throughput.py --device cuda --out-dir /tmp/bench   # all four

It writes ``resnet_throughput_DEVICE.json`` into ``--out-dir`` and logs a table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("resnet_throughput")


def load_adapter_module() -> Any:
    """adapters/resnet.py, imported as the worker would (without installing the package)."""
    spec = importlib.util.spec_from_file_location("resnet_adapter", ROOT / "adapters" / "resnet.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def synchronize(torch: Any, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class BareLoop:
    """The reference: a plain PyTorch loop over pre-normalised float tensors on the device."""

    def __init__(
        self,
        resnet: Any,
        arch: str,
        size: int,
        x: np.ndarray,
        y: np.ndarray,
        n_classes: int,
        device: str,
        batch_size: int,
        lr: float,
    ) -> None:
        import torch

        self.torch = torch
        self.size = size
        self.device = device
        self.batch_size = batch_size
        torch.manual_seed(0)
        cuda = device == "cuda"
        self.memory_format = torch.channels_last if cuda else torch.contiguous_format
        self.x = resnet.images_tensor(x, device).float().div(255).sub(0.5).div(0.5)
        self.y = torch.from_numpy(y.reshape(-1).astype(np.int64)).to(device)
        self.model = resnet.build_model(arch, size, self.x.shape[1], n_classes).to(device)
        self.model = self.model.to(memory_format=self.memory_format)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.scaler = torch.amp.GradScaler("cuda", enabled=cuda)
        self.cuda = cuda

    def train(self, n_batches: int) -> int:
        torch = self.torch
        self.model.train()
        seen = 0
        for i in range(n_batches):
            start = (i * self.batch_size) % len(self.x)
            x = self.x[start : start + self.batch_size]
            if self.size != x.shape[-1]:
                x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="nearest")
            x = x.contiguous(memory_format=self.memory_format)
            y = self.y[start : start + self.batch_size]
            autocast = torch.autocast("cuda", dtype=torch.float16) if self.cuda else nullcontext()
            with autocast:
                loss = self.loss_fn(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            seen += len(x)
        return seen


def measure(resnet: Any, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Images per second of both loops for one variant (e.g. resnet18_28)."""
    import torch

    arch, size = name.split("_")[0], int(name.split("_")[1])
    rng = np.random.default_rng(0)
    n = args.batch_size * (args.batches + args.warmup)
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    if args.channels == 3:
        x = rng.integers(0, 256, size=(n, 28, 28, 3), dtype=np.uint8)
    y = rng.integers(0, 2, size=(n, 1), dtype=np.uint8)
    trainer = resnet.Trainer(
        arch,
        size,
        "binary-class",
        2,
        x,
        y,
        device=args.device,
        epochs=100,
        batch_size=args.batch_size,
        lr=1e-3,
        seed=0,
    )
    bare = BareLoop(resnet, arch, size, x, y, 2, args.device, args.batch_size, 1e-3)

    def run_adapter(batches: int) -> int:
        return trainer.train_epoch(max_batches=batches).images

    results: dict[str, list[float]] = {"adapter": [], "bare": []}
    for fn in (run_adapter, bare.train):
        fn(args.warmup)  # cudnn autotuning, allocator growth, first-call costs
    for repeat in range(args.repeats):
        order = [("adapter", run_adapter), ("bare", bare.train)]
        if repeat % 2:
            order.reverse()
        for label, fn in order:
            synchronize(torch, args.device)
            started = time.perf_counter()
            images = fn(args.batches)
            synchronize(torch, args.device)
            results[label].append(images / (time.perf_counter() - started))
    adapter = statistics.median(results["adapter"])
    bare_rate = statistics.median(results["bare"])
    adapter_best, bare_best = max(results["adapter"]), max(results["bare"])
    row = {
        "variant": name,
        "adapter_img_s": round(adapter, 1),
        "bare_img_s": round(bare_rate, 1),
        "adapter_loss_pct": round(100.0 * (1.0 - adapter / bare_rate), 2),
        # On a shared machine the best run of each loop is the least disturbed one.
        "adapter_best_img_s": round(adapter_best, 1),
        "bare_best_img_s": round(bare_best, 1),
        "adapter_loss_pct_best": round(100.0 * (1.0 - adapter_best / bare_best), 2),
        "adapter_runs": [round(r, 1) for r in results["adapter"]],
        "bare_runs": [round(r, 1) for r in results["bare"]],
    }
    log.info(
        "%-13s median: adapter %8.1f img/s, bare %8.1f img/s, adapter slower by %5.2f%%;"
        " best: %8.1f vs %8.1f img/s, %5.2f%%",
        name,
        adapter,
        bare_rate,
        row["adapter_loss_pct"],
        adapter_best,
        bare_best,
        row["adapter_loss_pct_best"],
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--variants", default="resnet18_28,resnet18_224,resnet50_28,resnet50_224")
    parser.add_argument("--batches", type=int, default=50, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each loop")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--channels", type=int, choices=(1, 3), default=1)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's)")
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch
    import torchvision

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    resnet = load_adapter_module()
    rows = [measure(resnet, name.strip(), args) for name in args.variants.split(",")]
    if args.device == "cuda":
        device_name = torch.cuda.get_device_name(0)
    else:
        device_name = platform.processor() or platform.machine()
    report = {
        "benchmark": "resnet_throughput",
        "device": args.device,
        "device_name": device_name,
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "batch_size": args.batch_size,
        "batches": args.batches,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "channels": args.channels,
        "mixed_precision": args.device == "cuda",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": rows,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / f"resnet_throughput_{args.device}.json"
    path.write_text(json.dumps(report, indent=2))
    log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
