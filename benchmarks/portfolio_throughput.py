"""Training and prediction speed of the portfolio's networks on a CPU, two ways side by side:
default (NCHW) against channels-last tensors (``--compare layout``), or float32 against
bfloat16-autocast training steps, both channels-last (``--compare precision``): what
``adapters/portfolio.py``'s channels-last everywhere and its option ``precision`` rest on.

For every configuration of ``PORTFOLIO`` and for one and three input channels, the same network
(``build_network``, base width 16 as on a CPU), the same random batch and the same AdamW step
are timed both ways: ``--steps`` training steps of ``--batch`` images after two untimed ones,
then two prediction passes over 512 images after one untimed (float32, as the adapter predicts
on a CPU), in one process with one torch thread (the adapter's setting on a CPU). The two ways
alternate, and the order flips from one repeat to the next. It writes the medians as JSON and
logs a table.

Run it from the repository root with the ResNets' environment (torch, numpy)::

    ENV=~/.cache/decathlon/envs/<hash>/bin/python    # python -m decathlon setup portfolio
    $ENV benchmarks/portfolio_throughput.py --repeats 3 --out /tmp/portfolio_throughput.json
    $ENV benchmarks/portfolio_throughput.py --compare precision --out /tmp/precision.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("portfolio_throughput")


def load_portfolio() -> Any:
    """``adapters/portfolio.py`` of this checkout, importable as ``decathlon_adapters``."""
    sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location(
        "decathlon_adapters", ROOT / "adapters" / "__init__.py"
    )
    assert spec and spec.loader
    package = importlib.util.module_from_spec(spec)
    sys.modules["decathlon_adapters"] = package
    spec.loader.exec_module(package)
    import decathlon_adapters.portfolio as portfolio

    return portfolio


def time_layout(
    portfolio: Any,
    config: Any,
    channels: int,
    channels_last: bool,
    batch: int,
    steps: int,
    bf16: bool = False,
) -> tuple[float, float]:
    """Training and prediction images per second of ``config`` in one layout, its training
    steps in float32 or (``bf16``) under bfloat16 autocast."""
    import torch

    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = portfolio.build_network(config, 16, channels, 2).to(memory_format=layout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, channels, 28, 28).contiguous(memory_format=layout)
    target = torch.zeros(batch, 2)
    target[:, 1] = 1.0
    seconds = 0.0
    for step in range(steps + 2):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x).float()
        loss = torch.sum(-target * torch.log_softmax(logits, dim=1), dim=1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 2:
            seconds += time.perf_counter() - started
    model.eval()
    images = torch.randn(512, channels, 28, 28).contiguous(memory_format=layout)
    with torch.inference_mode():
        model(images)
        started = time.perf_counter()
        model(images)
        model(images)
        predict_s = time.perf_counter() - started
    return steps * batch / seconds, 2 * len(images) / predict_s


def cpu_model() -> str:
    """The processor's model name (Linux), else what ``platform`` says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare", choices=("layout", "precision"), default="layout")
    parser.add_argument("--out", type=Path, default=Path("portfolio_throughput.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    torch.set_num_threads(1)
    portfolio = load_portfolio()
    # The two ways compared: a name and (channels_last, bf16) for each, the baseline first.
    ways = {
        "layout": (("nchw", (False, False)), ("channels_last", (True, False))),
        "precision": (("float32", (True, False)), ("bfloat16", (True, True))),
    }[args.compare]
    rows = []
    for config in portfolio.PORTFOLIO:
        for channels in (1, 3):
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in ways}
            for repeat in range(args.repeats):
                for name, (channels_last, bf16) in ways[:: 1 if repeat % 2 == 0 else -1]:
                    runs[name].append(
                        time_layout(
                            portfolio, config, channels, channels_last, args.batch, args.steps, bf16
                        )
                    )
            row = {"config": config.name, "channels": channels}
            for name, _ in ways:
                row[f"train_{name}"] = statistics.median(r[0] for r in runs[name])
                row[f"predict_{name}"] = statistics.median(r[1] for r in runs[name])
            rows.append(row)
            (a, _), (b, _) = ways
            log.info(
                "%-16s %d ch  train %5.0f -> %5.0f img/s (x%.2f)  predict %5.0f -> %5.0f (x%.2f)",
                config.name,
                channels,
                row[f"train_{a}"],
                row[f"train_{b}"],
                row[f"train_{b}"] / row[f"train_{a}"],
                row[f"predict_{a}"],
                row[f"predict_{b}"],
                row[f"predict_{b}"] / row[f"predict_{a}"],
            )
    result = {
        "machine": cpu_model(),
        "bf16_instructions": portfolio.cpu_has_bf16(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
