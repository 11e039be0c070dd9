"""Training and prediction speed of the portfolio's networks, default (NCHW) against channels-last
tensors, on a CPU: what ``adapters/portfolio.py``'s choice of channels-last everywhere rests on.

For every configuration of ``PORTFOLIO`` and for one and three input channels, the same network
(``build_network``, base width 16 as on a CPU), the same random batch and the same AdamW step
are timed in both layouts: ``--steps`` training steps of ``--batch`` images after two untimed
ones, then two prediction passes over 512 images after one untimed, in one process with one
torch thread (the adapter's setting on a CPU). The two layouts alternate, and the order flips
from one repeat to the next. It writes the medians as JSON and logs a table.

Run it from the repository root with the ResNets' environment (torch, numpy)::

    ENV=~/.cache/decathlon/envs/<hash>/bin/python    # python -m decathlon setup portfolio
    $ENV benchmarks/portfolio_throughput.py --repeats 3 --out /tmp/portfolio_throughput.json
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
    portfolio: Any, config: Any, channels: int, channels_last: bool, batch: int, steps: int
) -> tuple[float, float]:
    """Training and prediction images per second of ``config`` in one layout."""
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
        loss = torch.sum(-target * torch.log_softmax(model(x), dim=1), dim=1).mean()
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
    parser.add_argument("--out", type=Path, default=Path("portfolio_throughput.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    torch.set_num_threads(1)
    portfolio = load_portfolio()
    rows = []
    for config in portfolio.PORTFOLIO:
        for channels in (1, 3):
            runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for repeat in range(args.repeats):
                order = (False, True) if repeat % 2 == 0 else (True, False)
                for channels_last in order:
                    runs[channels_last].append(
                        time_layout(
                            portfolio, config, channels, channels_last, args.batch, args.steps
                        )
                    )
            row = {"config": config.name, "channels": channels}
            for channels_last, name in ((False, "nchw"), (True, "channels_last")):
                row[f"train_{name}"] = statistics.median(r[0] for r in runs[channels_last])
                row[f"predict_{name}"] = statistics.median(r[1] for r in runs[channels_last])
            rows.append(row)
            log.info(
                "%-16s %d ch  train %5.0f -> %5.0f img/s (x%.2f)  predict %5.0f -> %5.0f (x%.2f)",
                config.name,
                channels,
                row["train_nchw"],
                row["train_channels_last"],
                row["train_channels_last"] / row["train_nchw"],
                row["predict_nchw"],
                row["predict_channels_last"],
                row["predict_channels_last"] / row["predict_nchw"],
            )
    result = {
        "machine": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
