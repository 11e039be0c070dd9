"""The MedMNIST papers' ResNet baselines: ResNet-18 and ResNet-50 at 28x28 and at 224x224.

Four adapters share this module and one environment (torch and torchvision):

- ``resnet18_28``, ``resnet50_28``: torchvision's ResNet (not pretrained) with a 3x3 stride-1
  first convolution and no max-pool, on the images as they are (28x28, or the MedMNIST+ 64, 128
  and 224 pixel images: the stem accepts every size).
- ``resnet18_224``, ``resnet50_224``: the stock torchvision ResNet at 224x224: MedMNIST+ 224
  images as they are, smaller ones upscaled by nearest neighbour (per batch on the device,
  never stored).

The images are read from the task's memory-mapped arrays one batch at a time (a background
thread reads the next batch while the device works on this one), never as whole tensors: at 224
pathmnist's training images are 13 GB.

Protocol of the published experiment code: ``task.budget.epochs`` epochs (100 in the paper
profile), batch 128, learning rate 1e-3, Adam with the rate divided by 10 at 50% and 75% of the
epochs (``optimizer=sgd`` gives the paper text's SGD with momentum 0.9 on the same schedule),
cross-entropy (binary cross-entropy on sigmoids for multi-label chestmnist), inputs
``(x / 255 - 0.5) / 0.5``. The validation AUC (the harness's own rules) is computed after each
epoch and the epoch with the best one predicts train, val and test; its weights are saved as
``output_dir/best.pt``. Training stops early when the next epoch would not end before the task's
deadline (less a margin for the final predictions), and the best epoch so far predicts.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from decathlon.contract import MULTI_LABEL, Adapter, Environment, Predictions, Task
from decathlon.hookspecs import hookimpl
from decathlon.options import Choice, Range, check_table

log = logging.getLogger(__name__)

ENVIRONMENT = Environment(
    python="3.11",
    requirements=("torch==2.14.1", "torchvision==0.29.1", "scikit-learn"),
    name="resnet",  # the four variants share one environment and one lock
)

#: The adapter options and their defaults (``--option key=value`` overrides them).
OPTIONS: dict[str, Any] = {
    "batch_size": 128,
    "lr": 1e-3,
    "optimizer": "adam",  # "adam" (published code) or "sgd" (paper text, momentum 0.9)
    "eval_batch_size": 256,  # batch size of the prediction passes
    "predict_train": True,  # also score the training set with the best epoch's weights
}

OPTIMIZERS = ("adam", "sgd")


#: The options' ranges and choices: out of them, each failed only inside the task, or trained
#: nothing.
RANGES = (
    Range("batch_size", 1, whole=True),
    Range("eval_batch_size", 1, whole=True),
    Range("lr", 0, above=True),
    Choice("optimizer", OPTIMIZERS, any_case=True),
)


def check_options(options: dict[str, Any]) -> None:
    """Refuse, in the harness before any task starts, an option outside :data:`RANGES`."""
    check_table(options, RANGES)


#: (adapter name, torchvision architecture, input size)
VARIANTS = (
    ("resnet18_28", "resnet18", 28),
    ("resnet18_224", "resnet18", 224),
    ("resnet50_28", "resnet50", 28),
    ("resnet50_224", "resnet50", 224),
)

ADAPTERS = tuple(
    Adapter(
        name=name,
        run=f"decathlon_adapters.resnet:run_{name}",
        description=(
            f"torchvision {arch.replace('resnet', 'ResNet-')} from scratch at {size}x{size}"
            + (" (nearest-neighbour upscaled)" if size == 224 else " (3x3 stem, no max-pool)")
            + ", best-validation-AUC epoch (MedMNIST papers' baseline)"
        ),
        environment=ENVIRONMENT,
        options=dict(OPTIONS),
        check_options=check_options,
        uses_gpu=True,
        sizes=(28, 64, 128, 224),
    )
    for name, arch, size in VARIANTS
)


@hookimpl
def decathlon_register_adapters(register) -> None:
    for adapter in ADAPTERS:
        register(adapter)


def run_resnet18_28(task: Task) -> Predictions:
    """Train and predict with ResNet-18 on the 28x28 images."""
    return train_and_predict(task, "resnet18", 28)


def run_resnet18_224(task: Task) -> Predictions:
    """Train and predict with ResNet-18 at 224x224 (smaller images upscaled)."""
    return train_and_predict(task, "resnet18", 224)


def run_resnet50_28(task: Task) -> Predictions:
    """Train and predict with ResNet-50 on the 28x28 images."""
    return train_and_predict(task, "resnet50", 28)


def run_resnet50_224(task: Task) -> Predictions:
    """Train and predict with ResNet-50 at 224x224 (smaller images upscaled)."""
    return train_and_predict(task, "resnet50", 224)


#: Fractions of the epochs after which the learning rate is divided by 10 (epochs 50 and 75 of
#: the published 100).
MILESTONES = (0.5, 0.75)
#: Seconds kept free before the deadline for saving the model and the final predictions.
DEADLINE_MARGIN_S = 20.0


def build_model(arch: str, size: int, in_channels: int, n_outputs: int) -> Any:
    """torchvision's ``arch`` (untrained) for the variant ``size`` 28 (3x3 stride-1 stem, no
    max-pool; it takes any image size) or 224 (the stock stem), with ``in_channels`` input
    channels and ``n_outputs`` logits."""
    import torchvision
    from torch import nn

    model = getattr(torchvision.models, arch)(weights=None, num_classes=n_outputs)
    if size == 28:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    # torchvision initialises its convolutions this way; a replaced stem would get the default.
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def milestones(epochs: int) -> list[int]:
    """Epochs after which the rate drops: [50, 75] for 100 epochs, none that never comes."""
    return sorted({int(f * epochs) for f in MILESTONES if 0 < int(f * epochs) < epochs})


def images_tensor(images: np.ndarray, device: Any) -> Any:
    """uint8 images (N, H, W) or (N, H, W, C) as a contiguous uint8 tensor (N, C, H, W).

    For a few images at a time (a batch): the training loop never converts a whole split.
    """
    import torch

    array = np.asarray(images)
    if array.ndim == 3:
        array = array[:, None, :, :]
    else:
        array = array.transpose(0, 3, 1, 2)
    # A copy: the task's arrays are read-only memory maps, which torch will not wrap.
    tensor = torch.from_numpy(np.array(array, order="C"))
    if torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


def prefetched(load: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
    """``load(item)`` for each item, the next one loaded in a thread while this one is used
    (numpy's copies out of the memory map release the GIL)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        iterator = iter(items)
        first = next(iterator, None)
        pending = None if first is None else pool.submit(load, first)
        while pending is not None:
            result = pending.result()
            following = next(iterator, None)
            pending = None if following is None else pool.submit(load, following)
            yield result


@dataclass
class EpochStats:
    """What one training pass did: images seen, seconds, mean loss."""

    images: int
    seconds: float
    loss: float


class Trainer:
    """One model, its optimiser and its data on one device: the adapter's training loop.

    Kept separate from :func:`train_and_predict` so that the throughput benchmark drives exactly
    the loop the adapter runs.
    """

    def __init__(
        self,
        arch: str,
        size: int,
        task_type: str,
        n_outputs: int,
        x_train: np.ndarray,
        y_train: np.ndarray,
        *,
        device: str = "cpu",
        epochs: int = 1,
        batch_size: int = 128,
        lr: float = 1e-3,
        optimizer: str = "adam",
        seed: int = 0,
        eval_batch_size: int = 256,
    ) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.size = size
        self.task_type = task_type
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        if self.cuda:
            torch.backends.cudnn.benchmark = True
        self.memory_format = torch.channels_last if self.cuda else torch.contiguous_format
        self.x_train = x_train  # memory-mapped: read a batch at a time
        labels = np.asarray(y_train)
        if task_type == MULTI_LABEL:
            self.y_train = torch.from_numpy(labels.astype(np.float32)).to(self.device)
            self.loss_fn = torch.nn.BCEWithLogitsLoss()
        else:
            self.y_train = torch.from_numpy(labels.reshape(-1).astype(np.int64)).to(self.device)
            self.loss_fn = torch.nn.CrossEntropyLoss()
        in_channels = int(x_train.shape[3]) if x_train.ndim == 4 else 1
        self.model = build_model(arch, size, in_channels, n_outputs).to(self.device)
        self.model = self.model.to(memory_format=self.memory_format)
        # One of OPTIMIZERS: check_options (RANGES) refused any other value before the task.
        if optimizer == "sgd":
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9)
        else:
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=milestones(epochs), gamma=0.1
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.cuda)

    def prepare(self, batch: Any) -> Any:
        """uint8 (B, C, S, S) on the device -> normalised float input of the model's size
        (upscaled by nearest neighbour only for the 224 variants on smaller images)."""
        x = batch.float().div_(255.0).sub_(0.5).div_(0.5)
        if self.size == 224 and x.shape[-1] != 224:
            x = self.torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="nearest")
        return x.contiguous(memory_format=self.memory_format)

    def _autocast(self) -> Any:
        if not self.cuda:
            return contextlib.nullcontext()
        return self.torch.autocast("cuda", dtype=self.torch.float16)

    def batches(self, max_batches: int | None = None) -> Iterator[np.ndarray]:
        """Shuffled index batches of one epoch (all of it, or its first ``max_batches``), each
        sorted so that it reads the memory-mapped images front to back."""
        order = self.torch.randperm(len(self.x_train), generator=self.generator).numpy()
        for i, start in enumerate(range(0, len(order), self.batch_size)):
            if max_batches is not None and i >= max_batches:
                return
            yield np.sort(order[start : start + self.batch_size])

    def _load(self, index: np.ndarray) -> tuple[Any, Any]:
        index_tensor = self.torch.from_numpy(index).to(self.device)
        return images_tensor(self.x_train[index], self.device), index_tensor

    def train_epoch(self, max_batches: int | None = None) -> EpochStats:
        """One pass over the (shuffled) training set; the scheduler steps only after full ones."""
        torch = self.torch
        self.model.train()
        started = time.perf_counter()
        total = torch.zeros((), device=self.device)
        seen = 0
        for batch, index in prefetched(self._load, self.batches(max_batches)):
            x = self.prepare(batch)
            y = self.y_train[index]
            with self._autocast():
                loss = self.loss_fn(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += loss.detach() * len(index)
            seen += len(index)
        mean_loss = float(total.item()) / max(1, seen)  # one sync per epoch
        if max_batches is None:
            self.scheduler.step()
        return EpochStats(seen, time.perf_counter() - started, mean_loss)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (softmax, or sigmoid for multi-label) for uint8 images (memory-mapped
        or not, read a batch at a time), in order."""
        torch = self.torch
        self.model.eval()
        out = []
        step = self.eval_batch_size
        starts = range(0, len(images), step)
        batches = prefetched(lambda i: images_tensor(images[i : i + step], self.device), starts)
        with torch.inference_mode(), self._autocast():
            for batch in batches:
                logits = self.model(self.prepare(batch))
                logits = logits.float()
                if self.task_type == MULTI_LABEL:
                    out.append(torch.sigmoid(logits))
                else:
                    out.append(torch.softmax(logits, dim=1))
        return torch.cat(out).cpu().numpy().astype(np.float64)

    def state(self) -> dict[str, Any]:
        """A CPU copy of the model's weights."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}


def train_and_predict(task: Task, arch: str, size: int) -> Predictions:
    """The adapter: train for the budget's epochs, keep the best-validation-AUC epoch, predict."""
    import torch

    from decathlon.metrics import auc

    if not logging.getLogger().handlers:  # the worker sets none: epochs go to the task's log
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    opts = task.options
    device = "cuda" if task.device == "cuda" and torch.cuda.is_available() else "cpu"
    if task.device == "cuda" and device == "cpu":
        log.warning("the harness gave device cuda, but torch sees no CUDA device: using the CPU")
    torch.set_num_threads(max(1, int(task.n_jobs)))
    epochs = int(task.budget.epochs or 100)
    trainer = Trainer(
        arch,
        size,
        task.dataset.task,
        task.dataset.n_outputs,
        task.x_train,
        task.y_train,
        device=device,
        epochs=epochs,
        batch_size=int(opts.get("batch_size", 128)),
        lr=float(opts.get("lr", 1e-3)),
        optimizer=str(opts.get("optimizer", "adam")).lower(),
        seed=task.seed,
        eval_batch_size=int(opts.get("eval_batch_size", 256)),
    )
    x_val = task.x_val
    y_val = np.asarray(task.y_val)
    n_all = len(task.x_train) + len(task.x_val) + len(task.x_test)
    history: list[float | None] = []
    epoch_seconds: list[float] = []
    best_auc, best_epoch, best_state = -math.inf, 0, None
    predict_seconds = 0.0
    stopped_early, reason = False, ""
    log.info(
        "%s at %d on %s: %d epochs on %s, milestones %s",
        arch,
        size,
        task.dataset.flag,
        epochs,
        device,
        milestones(epochs),
    )
    for epoch in range(1, epochs + 1):
        if epoch_seconds:
            # The next epoch must end, and the final predictions (about an evaluation pass over
            # every split) be made, before the deadline.
            need = 1.2 * max(epoch_seconds) + predict_seconds * n_all / len(y_val)
            left = task.deadline - time.time() - DEADLINE_MARGIN_S
            if need > left:
                stopped_early = True
                reason = (
                    f"stopped before epoch {epoch}: it needs about {need:.0f} s with the final"
                    f" predictions, {max(0.0, left):.0f} s are left before the deadline"
                )
                log.warning("%s", reason)
                break
        stats = trainer.train_epoch()
        started = time.perf_counter()
        val_scores = trainer.predict(x_val)
        predict_seconds = time.perf_counter() - started
        epoch_seconds.append(stats.seconds + predict_seconds)
        try:
            val_auc = auc(task.dataset.task, y_val, val_scores)
        except ValueError:  # scores with NaN (a diverged run)
            val_auc = math.nan
        history.append(None if math.isnan(val_auc) else round(val_auc, 6))
        log.info(
            "epoch %d/%d: loss %.4f, val AUC %.4f, %.1f s (%.0f img/s)",
            epoch,
            epochs,
            stats.loss,
            val_auc,
            stats.seconds,
            stats.images / max(stats.seconds, 1e-9),
        )
        # Strictly better, so a tie keeps the earlier epoch (as the published code does).
        comparable = -math.inf if math.isnan(val_auc) else val_auc
        if best_state is None or comparable > best_auc:
            best_auc, best_epoch, best_state = comparable, epoch, trainer.state()
    trainer.model.load_state_dict(best_state)
    torch.save(best_state, task.output_dir / "best.pt")
    predict_train = str(opts.get("predict_train", True)).lower() not in ("false", "0", "no")
    info: dict[str, Any] = {
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "epochs": epochs,
        "stopped_early": stopped_early,
        "best_val_auc": round(best_auc, 6) if math.isfinite(best_auc) else None,
        "val_auc_history": history,
        "mean_epoch_s": round(float(np.mean(epoch_seconds)), 2),
        "device": device,
        "mixed_precision": trainer.cuda,
    }
    if reason:
        info["stop_reason"] = reason
    # Test and val first: the scores. Train predictions are optional, so they come last and only
    # when the time left covers them (at the val pass's speed); a stop close to the deadline
    # must not lose the whole task to them.
    test = trainer.predict(task.x_test)
    val = trainer.predict(x_val)
    train = None
    if predict_train:
        left = task.deadline - time.time() - DEADLINE_MARGIN_S / 2
        need = predict_seconds * len(task.x_train) / max(len(y_val), 1)
        if train_predictions_fit(left, need):
            train = trainer.predict(task.x_train)
        else:
            info["train_predictions"] = (
                f"skipped: about {need:.0f} s needed, {max(0.0, left):.0f} s left before the"
                " deadline"
            )
            log.warning("train predictions %s", info["train_predictions"])
    return Predictions(train=train, val=val, test=test, info=info)


def train_predictions_fit(left_seconds: float, need_seconds: float) -> bool:
    """Whether predicting the training split (estimated ``need_seconds``, with a fifth to spare)
    ends in the ``left_seconds`` before the deadline."""
    return 1.2 * need_seconds <= left_seconds
