"""``portfolio``: a time-budgeted portfolio of small from-scratch image networks, raced and
ensembled.

What it does, in order:

1. **Portfolio.** A fixed list of configurations for 28x28 images (:data:`PORTFOLIO`): small
   ResNet-style networks with a 3x3 stride-1 stem, a wider shallower network and a plain VGG-style
   one, each with an augmentation family (flips and shifts; small rotations and scaling; the
   same with mixup or cutmix), label smoothing, AdamW with cosine decay. On a CPU the networks
   are narrow (the list is sized to what trains in minutes on a few cores); on a GPU the same
   configurations are trained wider (``width`` doubles) with fp16 mixed precision; on a CPU
   with bfloat16 instructions, training steps run under bfloat16 autocast (option
   ``precision``). On colour images every network starts with a whitening stem, a first
   convolution fixed from train's patches (option ``whiten``). On grey images whose mirrors are
   told from them (a chest X-ray's heart is on one side), no image is mirrored, in training or
   at test time (option ``mirror``).
2. **Racing.** Successive halving with restarts: every configuration trains a complete short
   cosine schedule of ``r0`` epochs; the best third by validation AUC (the harness's own
   :func:`decathlon.metrics.auc`) trains again with a new seed and three times the epochs, and so
   on. Spare time in a rung (and the time left at the end) goes to further seeds of the
   survivors, so the time budget is spent on diversity rather than on one long over-fitting run.
3. **Members.** A run's prediction is the mean of its predictions after every epoch of the last
   half of its schedule (an epoch-snapshot ensemble: on these small sets the best-validation
   epoch is noise). Each run is one candidate member, with and without test-time
   augmentation: the image and its mirror (no mirror with option ``mirror``'s upright images),
   each also turned by -10 and +10 degrees (option
   ``tta_angle``) for configurations trained with small rotations (``aug="geo"``), or the
   eight views of the square's symmetries for those trained at every angle (``aug="rot"``).
4. **Ensemble.** Greedy ensemble selection with replacement on the validation split (Caruana et
   al., 2004), started from the best few members and bagged over random halves of the
   candidates, which keeps the weights from chasing the small validation sets' noise. Test-time
   augmentation is kept unless the ensemble without it has the higher validation AUC in 95% of
   bootstrap resamples of the validation images.

Cross-fitting (option ``folds``, off by default): train and val are pooled and dealt into K
stratified folds; every run then trains K networks, each on all folds but one, and its
"validation" scores are the out-of-fold scores of every pooled image. Racing, ensemble
selection and calibration read those (hundreds of images more than val alone on the small
sets), the harness gets val's out-of-fold rows, and a run's test scores are its K networks'
mean. Each run costs K trainings, so fewer configurations are raced in the same time.

The deadline: the search stops when the next epoch and the final ensemble would not fit before
``min(start + time budget, task.deadline)`` less a margin, and the ensemble of whatever finished
is returned; the notes say ``deadline_cut``. With an epoch budget (``budget.epochs``) the plan
is fixed in epochs, and the same seed on the same machine gives the same predictions.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

# The ResNet adapters' environment (torch + torchvision + scikit-learn): no new one to build.
from decathlon_adapters.resnet import ENVIRONMENT, images_tensor

from decathlon.contract import BINARY, MULTI_LABEL, ORDINAL, Adapter, Predictions, Task
from decathlon.hookspecs import hookimpl
from decathlon.options import Choice, Range, check_table

log = logging.getLogger(__name__)

#: The adapter options and their defaults (``--option key=value`` overrides them).
OPTIONS: dict[str, Any] = {
    "eta": 3,  # successive halving's reduction factor
    "r0": 0,  # epochs of the first rung; 0 = sized from the time budget
    # The longest schedule a run gets; with a time budget, spare time goes to more seeds
    # rather than longer runs, as far as no run gets shorter than the rung before's.
    "max_epochs": 40,
    "min_epochs": 8,  # the shortest (rung 0)
    "batch_size": 64,
    "ensemble_size": 25,  # greedy selection steps (with replacement)
    "bags": 8,  # bagged ensemble selection: number of random halves of the candidates
    "width": 0,  # base channel width; 0 = 16 on CPU, 32 on GPU
    "processes": 0,  # training processes on a CPU; 0 = the task's n_jobs (one per core)
    "threads": 0,  # torch threads per process; 0 = n_jobs / processes
    # Ordinal-regression tasks: soft ordinal targets exp(-alpha (k - y)^2) (SORD); 0 = one-hot.
    # Off: alpha 1 lowered retinamnist's validation and test AUC (benchmarks/RESULTS.md).
    "ordinal_alpha": 0.0,
    # Training arithmetic: "auto" = bfloat16 autocast on a CPU with bfloat16 instructions
    # (AVX512-BF16 or AMX; 1.4 to 1.8 times the steps per second of float32 on the 2-core AMD
    # machine, benchmarks/RESULTS.md), float16 with loss scaling on a GPU, else float32;
    # "fp32" = float32 everywhere. Predictions are float32 on a CPU either way.
    "precision": "auto",
    # Intensity jitter in training: contrast and brightness within +-this share; 0 = none.
    "intensity": 0.0,
    # Test-time views of the configurations trained with small rotations ("geo", up to 15
    # degrees): the image and its mirror, each also turned by -this and +this many degrees
    # (six views); 0 = the image and its mirror only. 10 raised single runs' test AUC on
    # breastmnist and pneumoniamnist (benchmarks/RESULTS.md, "test-time views at small angles").
    "tta_angle": 10.0,
    # Cross-fitting: K > 1 folds of train + val; each run trains K networks, each on all but
    # one fold, and is raced, selected and calibrated by its out-of-fold scores of every train
    # and val image (more images to train on and to choose by); its test scores are the folds'
    # mean. 0 = train on train, choose on val.
    "folds": 0,
    # Bagging: each run trains on its own stratified share of train (drawn by the run's seed),
    # and is still chosen and calibrated on val; 0 or 1 = all of train.
    "subsample": 0.0,
    # The configurations to race, by name, comma-separated, in race order (any of CONFIGS);
    # "" = PORTFOLIO.
    "configs": "",
    # A whitening stem (Config field whiten, 2x2 patches) on every raced configuration:
    # "none", "colour" (for images of three channels), "all". On retinamnist, three pairs at
    # wall10, test ACC +0.023 and AUC +0.003; no gain on the grey sets' screen
    # (benchmarks/RESULTS.md, "a whitening stem").
    "whiten": "colour",
    # Mirror images in training and among the test-time views: "auto" unless the images are
    # grey and a mirrored one is told from the training images (mirror_auc at least
    # HANDED_AUC): radiographs and CT slices are shown in one orientation (the patient's left on
    # the image's right), so a chest X-ray's mirror, its heart on the wrong side, is an image no
    # test split holds; "always"; "never" (benchmarks/RESULTS.md, "images with a handedness").
    "mirror": "auto",
    # The ensemble's output recalibrated on the validation split: a temperature and a bias per
    # class (per label) fitted by log-loss (benchmarks/RESULTS.md, "calibration"); false = none.
    "calibrate": True,
    # Every run's validation and test scores, the ensemble's weights and the calibration, kept
    # in the task's output folder (runs.npz): the result can be recomputed, and other ensembles
    # studied, without training again.
    "keep_runs": True,
}

#: The file in the task's output folder that :data:`OPTIONS` ``keep_runs`` writes.
RUNS_FILE = "runs.npz"


PRECISIONS = ("auto", "fp32")
WHITEN = ("none", "colour", "all")
MIRROR = ("auto", "always", "never")


#: The options' ranges and choices; the portfolio would otherwise fail inside the task (a batch
#: size of 0, -1 processes), clamp the value silently (eta 1 as 2), cross-fit nothing (folds 1)
#: or train on nonsense (subsample 1.5, ordinal_alpha -1).
RANGES = (
    Range("eta", 2, whole=True),
    Range("r0", 0, whole=True, zero="sized from the budget"),
    Range("max_epochs", 1, whole=True),
    Range("min_epochs", 1, whole=True),
    Range("batch_size", 1, whole=True),
    Range("ensemble_size", 1, whole=True),
    Range("bags", 0, whole=True),
    Range("width", 0, whole=True, zero="16 on a CPU, 32 on a GPU"),
    Range("processes", 0, whole=True, zero="one per core"),
    Range("threads", 0, whole=True, zero="cores / processes"),
    Range("ordinal_alpha", 0, zero="one-hot"),
    Range("intensity", 0, 1, zero="none"),
    Range("folds", 2, whole=True, zero="off"),
    Range("subsample", 0, 1, zero="all of train"),
    Range("tta_angle", 0, 45),
    Choice("precision", PRECISIONS),
    Choice("whiten", WHITEN),
    Choice("mirror", MIRROR),
)


def _check_options(options: dict[str, Any]) -> None:
    """Refuse, in the harness before any task starts, an option outside :data:`RANGES` and a
    ``configs`` naming no configuration."""
    check_table(options, RANGES)
    portfolio_of(options["configs"])


ADAPTER = Adapter(
    name="portfolio",
    run="decathlon_adapters.portfolio:run",
    description=(
        "portfolio of small from-scratch CNNs, raced by successive halving on val AUC,"
        " greedy ensemble selection (Caruana 2004), flip and rotation TTA"
    ),
    environment=ENVIRONMENT,
    options=dict(OPTIONS),
    check_options=_check_options,
    uses_gpu=True,
    default_budgets={
        "paper": {"time_seconds": [7200, 14400, 21600], "grace_seconds": 600},
        "quick": {"time_seconds": [120, 300, 600], "grace_seconds": 120},
    },
)


@hookimpl
def decathlon_register_adapters(register) -> None:
    register(ADAPTER)


@dataclass(frozen=True)
class Config:
    """One configuration of the portfolio: a network, an augmentation family, a loss."""

    name: str
    arch: str  # "res" (ResNet-style), "wide" (two wide stages), "vgg" (plain convolutions)
    widths: tuple[int, ...]  # channels per stage, in units of the base width
    blocks: int  # residual blocks (or conv pairs) per stage
    # "flip" | "geo" (flip, shift, rotation, scale) | "rot" (any angle, both flips) | "zoom"
    # ("geo" with the scale from 0.8 to 1.25, the aspect ratio +-10%, shifts up to 3 pixels)
    aug: str
    mix: str = ""  # "" | "mixup" | "cutmix"
    smoothing: float = 0.1
    lr: float = 2e-3
    weight_decay: float = 5e-4
    dropout: float = 0.1
    cost: float = 1.0  # training time per epoch relative to the first configuration (CPU)
    upsample: int = 1  # the image enlarged this many times (bilinear) before the first layer
    # Each image's own statistics taken out first: "" none, "center" its mean per channel,
    # "standardize" its mean and standard deviation (brightness and contrast as a shortcut).
    norm: str = ""
    optimizer: str = "adamw"  # "adamw" | "sgd" (Nesterov momentum 0.9; lr is SGD's then)
    # Sharpness-aware minimisation (Foret et al., 2021): each step's gradient taken at the
    # weights moved this far (L2) uphill first; 0 = plain steps. Two passes per step.
    sam: float = 0.0
    # Class-balanced loss: a class's weight is (its share / the mean share) ** -balance; 0 =
    # plain. The AUC of multi-class and ordinal tasks is the mean over classes, rare ones
    # counting as much as common ones.
    balance: float = 0.0
    # Sharpness jitter in training: each image blurred or sharpened by up to this amount
    # (:func:`augment`); 0 = none.
    sharpness: float = 0.0
    # A whitening stem (Jordan's airbench, 2024): a first convolution fixed before training,
    # whose filters whiten the training images' ``whiten`` x ``whiten`` patches (each
    # eigenvector of their covariance over the root of its eigenvalue, and its negative;
    # :func:`whitening_filters`), then the configuration's own stem; 0 = none.
    whiten: int = 0
    # False: no mirror images, in training nor among the test-time views (for images whose left
    # and right differ, as a chest X-ray's: the heart on one side).
    mirror: bool = True
    # Weight averaging: the snapshots predict with an exponential moving average of the
    # weights (and batch-norm statistics) over about this many epochs; 0 = the live weights.
    ema: float = 0.0

    @property
    def turns(self) -> int:
        """Quarter turns of each test-time view: 4 for images trained at every angle (the
        square's eight symmetries), else 1 (the image and its mirror)."""
        return 4 if self.aug == "rot" else 1


#: The portfolio, in a fixed order (the order breaks ties).
PORTFOLIO: tuple[Config, ...] = (
    Config("res-geo", "res", (1, 2, 4), 1, "geo"),
    Config("res-geo-mixup", "res", (1, 2, 4), 1, "geo", "mixup"),
    Config("vgg-geo", "vgg", (1, 2, 4), 1, "geo", smoothing=0.0, cost=0.6),
    Config("res-flip-cutmix", "res", (1, 2, 4), 1, "flip", "cutmix"),
    Config("wide-geo", "wide", (2, 4), 1, "geo", dropout=0.2, cost=2.2),
    Config("res-flip", "res", (1, 2, 4), 1, "flip", smoothing=0.0, weight_decay=5e-3),
    Config("vgg-geo-mixup", "vgg", (1, 2, 4), 1, "geo", "mixup", cost=0.6),
    Config("res2-geo", "res", (1, 2, 4), 2, "geo", lr=1e-3, cost=1.5),
    Config("res-geo-long", "res", (1, 2, 4), 1, "geo", lr=3e-3, dropout=0.3),
)

#: Configurations screened beside the portfolio, not raced unless named in the option
#: ``configs`` (``benchmarks/portfolio_configs.py`` trains any of them alone). vgg4-geo and
#: wide-geo-mixup were raced in the portfolio side by side with it and did not raise its test
#: AUC (benchmarks/RESULTS.md, "configurations screened").
MORE_CONFIGS: tuple[Config, ...] = (
    Config("vgg-wide-geo", "vgg", (2, 4, 8), 1, "geo", smoothing=0.0, cost=1.0),
    Config("vgg2-geo", "vgg", (1, 2, 4), 2, "geo", smoothing=0.0, cost=0.7),
    Config("vgg4-geo", "vgg", (1, 2, 4, 8), 1, "geo", smoothing=0.0, cost=0.6),
    Config("wide-geo-mixup", "wide", (2, 4), 1, "geo", "mixup", dropout=0.2, cost=2.2),
    Config("vgg-up-geo", "vgg", (1, 2, 4), 1, "geo", smoothing=0.0, cost=2.7, upsample=2),
    Config("vgg4-up-geo", "vgg", (1, 2, 4, 8), 1, "geo", smoothing=0.0, cost=2.7, upsample=2),
    Config("res-up-geo", "res", (1, 2, 4), 1, "geo", cost=5.1, upsample=2),
    Config("vgg-geo-center", "vgg", (1, 2, 4), 1, "geo", smoothing=0.0, cost=0.6, norm="center"),
    Config("vgg-geo-std", "vgg", (1, 2, 4), 1, "geo", smoothing=0.0, cost=0.6, norm="standardize"),
    Config("wide-geo-center", "wide", (2, 4), 1, "geo", dropout=0.2, cost=2.2, norm="center"),
    Config("wide-geo-std", "wide", (2, 4), 1, "geo", dropout=0.2, cost=2.2, norm="standardize"),
    Config(
        "vgg-geo-sgd", "vgg", (1, 2, 4), 1, "geo", smoothing=0.0, lr=0.05, cost=0.6, optimizer="sgd"
    ),
    Config(
        "wide-geo-sgd", "wide", (2, 4), 1, "geo", lr=0.05, dropout=0.2, cost=2.2, optimizer="sgd"
    ),
    Config("vgg-geo-sam", "vgg", (1, 2, 4), 1, "geo", smoothing=0.0, cost=1.2, sam=0.05),
    Config("wide-geo-sam", "wide", (2, 4), 1, "geo", dropout=0.2, cost=4.4, sam=0.05),
    Config("res-geo-sam", "res", (1, 2, 4), 1, "geo", cost=2.0, sam=0.05),
    Config(
        "vgg-geo-sgd-sam",
        "vgg",
        (1, 2, 4),
        1,
        "geo",
        smoothing=0.0,
        lr=0.05,
        cost=1.2,
        optimizer="sgd",
        sam=0.05,
    ),
    Config("wide-geo-sam02", "wide", (2, 4), 1, "geo", dropout=0.2, cost=4.4, sam=0.02),
    Config("wide-rot", "wide", (2, 4), 1, "rot", dropout=0.2, cost=2.2),
    Config("vgg-rot", "vgg", (1, 2, 4), 1, "rot", smoothing=0.0, cost=0.6),
    Config("res-rot", "res", (1, 2, 4), 1, "rot"),
    Config("wide-geo-bal", "wide", (2, 4), 1, "geo", dropout=0.2, cost=2.2, balance=0.5),
    Config("wide-geo-bal1", "wide", (2, 4), 1, "geo", dropout=0.2, cost=2.2, balance=1.0),
    Config("vgg-geo-bal", "vgg", (1, 2, 4), 1, "geo", smoothing=0.0, cost=0.6, balance=0.5),
    Config("vgg-zoom", "vgg", (1, 2, 4), 1, "zoom", smoothing=0.0, cost=0.6),
    Config("res-zoom", "res", (1, 2, 4), 1, "zoom"),
    Config("wide-zoom", "wide", (2, 4), 1, "zoom", dropout=0.2, cost=2.2),
    Config("vgg-zoom-mixup", "vgg", (1, 2, 4), 1, "zoom", "mixup", cost=0.6),
    Config("vgg-geo-sharp", "vgg", (1, 2, 4), 1, "geo", smoothing=0.0, cost=0.6, sharpness=1.0),
    Config("res-geo-sharp", "res", (1, 2, 4), 1, "geo", sharpness=1.0),
    Config("wide-geo-sharp", "wide", (2, 4), 1, "geo", dropout=0.2, cost=2.2, sharpness=1.0),
    Config("vgg-geo-white", "vgg", (1, 2, 4), 1, "geo", smoothing=0.0, cost=0.9, whiten=2),
    Config("res-geo-white", "res", (1, 2, 4), 1, "geo", cost=1.3, whiten=2),
    Config("wide-geo-white", "wide", (2, 4), 1, "geo", dropout=0.2, cost=2.6, whiten=2),
    Config("res-geo-mixup-white", "res", (1, 2, 4), 1, "geo", "mixup", cost=1.3, whiten=2),
    Config("res2-geo-white", "res", (1, 2, 4), 2, "geo", lr=1e-3, cost=1.8, whiten=2),
    Config("vgg-geo-upright", "vgg", (1, 2, 4), 1, "geo", smoothing=0.0, cost=0.6, mirror=False),
    Config("res-geo-upright", "res", (1, 2, 4), 1, "geo", mirror=False),
)

#: Every configuration by name: what the option ``configs`` chooses from.
CONFIGS: dict[str, Config] = {c.name: c for c in (*PORTFOLIO, *MORE_CONFIGS)}


def portfolio_of(names: str) -> tuple[Config, ...]:
    """The configurations to race, in order: those named (comma-separated names of
    :data:`CONFIGS`), or :data:`PORTFOLIO` for none."""
    chosen = [name.strip() for name in str(names).split(",") if name.strip()]
    if not chosen:
        return PORTFOLIO
    unknown = [name for name in chosen if name not in CONFIGS]
    if unknown:
        raise ValueError(
            f"option configs: no configuration {', '.join(map(repr, unknown))};"
            f" known: {', '.join(CONFIGS)}"
        )
    if len(set(chosen)) < len(chosen):
        raise ValueError(f"option configs: a configuration named twice in {names!r}")
    return tuple(CONFIGS[name] for name in chosen)


def whitened(configs: tuple[Config, ...], option: str, x_train: np.ndarray) -> tuple[Config, ...]:
    """``configs`` as the option ``whiten`` has them: each with a whitening stem of 2x2
    patches (those without one) for "all", and for "colour" when the images have three
    channels (N, H, W, 3); unchanged for "none"."""
    if option == "all" or (option == "colour" and x_train.shape[3:] == (3,)):
        return tuple(c if c.whiten else replace(c, whiten=2) for c in configs)
    return configs


def mirror_auc(x_train: np.ndarray, images: int = 600, seed: int = 0) -> float:
    """How well a mirrored image can be told from an original: the cross-validated AUC of a
    logistic regression on the pixels (sampled to about 28 x 28) of ``images`` training images
    and their mirrors, each image and its mirror in the same fold. About 0.5 where a mirror
    looks like any other image (a skin lesion, a fundus of either eye); near 1 where images
    have a handedness (a chest X-ray: the heart on one side); 0.5 for fewer than 3 images."""
    if len(x_train) < 3:
        return 0.5  # too few for three folds
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold, cross_val_predict

    rng = np.random.default_rng(seed)
    picked = np.sort(rng.permutation(len(x_train))[:images])
    step = max(1, x_train.shape[1] // 28)
    x = x_train[picked][:, ::step, ::step].astype(np.float32) / 255.0
    pairs = np.concatenate([x, x[:, :, ::-1]]).reshape(2 * len(x), -1)
    is_mirror = np.r_[np.zeros(len(x)), np.ones(len(x))]
    scores = cross_val_predict(
        LogisticRegression(C=0.1, max_iter=1000),
        pairs,
        is_mirror,
        groups=np.r_[np.arange(len(x)), np.arange(len(x))],
        cv=GroupKFold(3),
        method="predict_proba",
    )[:, 1]
    return float(roc_auc_score(is_mirror, scores))


#: Grey images whose mirrors are told from them with at least this AUC are not mirrored (option
#: ``mirror`` "auto"): pneumoniamnist 0.99, breastmnist 0.57 (retinamnist, colour: 0.99, and
#: mirrored all the same: a fundus's mirror is an image of the other eye).
HANDED_AUC = 0.75


def mirrored(
    configs: tuple[Config, ...], option: str, x_train: np.ndarray
) -> tuple[tuple[Config, ...], float | None]:
    """``configs`` as the option ``mirror`` has them, and the :func:`mirror_auc` that "auto"
    read on grey images (None otherwise): unchanged for "always", for colour images and for
    "auto" below :data:`HANDED_AUC`, else each without mirror images (``mirror=False``)."""
    grey = x_train.ndim == 3 or x_train.shape[3:] == (1,)
    handedness = mirror_auc(x_train) if option == "auto" and grey else None
    if option == "never" or (handedness is not None and handedness >= HANDED_AUC):
        configs = tuple(replace(c, mirror=False) for c in configs)
    return configs, handedness


#: The most training images a whitening stem's filters are computed from.
WHITENING_IMAGES = 10_000

#: The share of the time left that the plan fills.
SLACK = 0.92
#: Seconds kept before the end for the ensemble selection and the result.
FINAL_MARGIN_S = 20.0
#: Seconds before the end at which the ensemble selection stops, at most: for the calibration,
#: the kept runs and the result (half the margin where that is less).
RESULT_RESERVE_S = 60.0


def auc_note(auc: float) -> float | None:
    """An AUC as the notes give it: to 4 places, or null where it is undefined (NaN, which
    ``json.dumps`` writes as a bare ``NaN`` that no strict JSON reader takes)."""
    return None if math.isnan(auc) else round(auc, 4)


@dataclass
class RunRecord:
    """One training run of one configuration: what it cost and what it predicts."""

    config: str
    rung: int
    seed: int
    epochs: int  # the schedule's epochs (epoch-bounded), or 0
    allotted_s: float | None = None  # the schedule's seconds (time-bounded), or None
    fold: int = -1  # cross-fitting: the fold held out; -1 = trained on train, scored on val
    epochs_run: int = 0
    seconds: float = 0.0
    val_auc: float = math.nan
    complete: bool = False
    # Sums of snapshot probabilities over the tail epochs (plain and with test-time views),
    # then means.
    val: dict[str, np.ndarray] = field(default_factory=dict)
    test: dict[str, np.ndarray] = field(default_factory=dict)
    snapshots: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "rung": self.rung,
            "seed": self.seed,
            "epochs": self.epochs or None,
            "allotted_s": None if self.allotted_s is None else round(self.allotted_s, 1),
            "epochs_run": self.epochs_run,
            "seconds": round(self.seconds, 1),
            "val_auc": auc_note(self.val_auc),
            "complete": self.complete,
        }


# ----------------------------------------------------------------------------- the networks


def build_network(config: Config, width: int, in_channels: int, n_outputs: int) -> Any:
    """The network of ``config`` for 28x28 inputs (any size works: global average pooling)."""
    from torch import nn

    def conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[Any]:
        return [
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                *conv_bn(c_in, c_out, stride),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
            )
            self.skip = (
                nn.Identity()
                if stride == 1 and c_in == c_out
                else nn.Sequential(
                    nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
                )
            )
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x: Any) -> Any:
            return self.relu(self.body(x) + self.skip(x))

    class PerImage(nn.Module):
        def __init__(self, scale: bool) -> None:
            super().__init__()
            self.scale = scale

        def forward(self, x: Any) -> Any:
            x = x - x.mean(dim=(2, 3), keepdim=True)
            if self.scale:
                x = x / (x.std(dim=(2, 3), keepdim=True) + 1e-3)
            return x

    channels = [width * m for m in config.widths]
    layers: list[Any] = []
    if config.norm:
        layers.append(PerImage(config.norm == "standardize"))
    if config.upsample > 1:
        layers.append(nn.Upsample(scale_factor=config.upsample, mode="bilinear"))
    if config.whiten:
        # Its filters are set from the training images (Runner.network) and never trained.
        k = config.whiten
        whiten = nn.Conv2d(in_channels, 2 * in_channels * k * k, k, padding=(k - 1) // 2)
        whiten.weight.requires_grad_(False)
        whiten.whitening = True
        layers += [whiten, nn.ReLU(inplace=True)]
        in_channels = whiten.out_channels
    layers += conv_bn(in_channels, channels[0])
    c_in = channels[0]
    for stage, c_out in enumerate(channels):
        for b in range(config.blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            if config.arch == "vgg":
                layers += conv_bn(c_in, c_out, 1)
                if stride == 2:
                    layers.insert(len(layers) - 3, nn.MaxPool2d(2))
            else:
                layers.append(Block(c_in, c_out, stride))
            c_in = c_out
    if config.arch == "wide":  # two wide stages end at 14x14: one more halving
        layers.append(nn.MaxPool2d(2))
    layers += [
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(config.dropout),
        nn.Linear(c_in, n_outputs),
    ]
    return nn.Sequential(*layers)


def whitening_filters(images: Any, size: int, eps: float = 5e-4) -> Any:
    """Filters of a ``size`` x ``size`` convolution that whiten ``images``' patches: the
    eigenvectors of the patches' second-moment matrix, each divided by the root of its
    eigenvalue (plus ``eps``), largest first, then the same negated (a ReLU after them keeps
    both signs); shape (2 * C * size * size, C, size, size)."""
    import torch

    channels = images.shape[1]
    patches = torch.nn.functional.unfold(images.float(), size)  # (N, C*size*size, positions)
    patches = patches.transpose(1, 2).reshape(-1, channels * size * size).double()
    moments = patches.T @ patches / len(patches)
    values, vectors = torch.linalg.eigh(moments)  # ascending
    values, vectors = values.flip(0), vectors.T.flip(0)
    filters = (vectors / torch.sqrt(values.clamp(min=0) + eps)[:, None]).float()
    filters = filters.reshape(-1, channels, size, size)
    return torch.cat([filters, -filters])


# ----------------------------------------------------------------------------- augmentation


def augment(
    x: Any,
    family: str,
    generator: Any,
    intensity: float = 0.0,
    sharpness: float = 0.0,
    mirror: bool = True,
) -> Any:
    """Random flips and shifts ("flip"), plus small rotations and scaling ("geo"; "zoom" with
    the scale, aspect ratio and shifts varied more), for a float batch (B, C, H, W), as one
    batched affine resampling; with ``intensity``, each image's
    contrast (about its mean) and brightness also change by up to that share; with
    ``sharpness``, each image is blurred or sharpened: ``x + a (x - blur(x))`` with ``a`` drawn
    from -sharpness to +sharpness (-1: the image blurred by a 3x3 binomial kernel). Without
    ``mirror``, no image is flipped (the same random draws otherwise)."""
    import torch

    b = x.shape[0]

    def uniform(low: float, high: float) -> Any:
        return torch.rand(b, generator=generator).mul_(high - low).add_(low).to(x.device)

    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device, x.dtype).mul_(2).sub_(1)
    if not mirror:
        flip = torch.ones_like(flip)
    shift = 2.0 * 2.0 / x.shape[-1]  # up to 2 pixels, in grid units
    stretch = torch.ones(b, device=x.device)  # the height's scale over the width's
    if family == "rot":  # images with no upright (a fundus): any angle, and a mirror
        angle = uniform(-math.pi, math.pi)
        scale = uniform(0.9, 1.1)
    elif family == "geo":
        angle = uniform(-math.pi / 12, math.pi / 12)  # +-15 degrees
        scale = uniform(0.9, 1.1)
    elif family == "zoom":  # "geo" with the framing varied more: 0.8 to 1.25 times, 3 pixels
        angle = uniform(-math.pi / 12, math.pi / 12)
        scale = uniform(math.log(0.8), math.log(1.25)).exp()
        stretch = uniform(math.log(0.9), math.log(1.0 / 0.9)).exp()
        shift = 3.0 * 2.0 / x.shape[-1]
    else:
        angle = torch.zeros(b, device=x.device)
        scale = torch.ones(b, device=x.device)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # The two axes scaled apart by the stretch ("zoom"): an aspect ratio within +-10%.
    sx, sy = stretch.sqrt(), 1.0 / stretch.sqrt()
    theta = torch.stack(
        [
            torch.stack([cos * flip * sx, -sin * sy, uniform(-shift, shift)], dim=1),
            torch.stack([sin * flip * sx, cos * sy, uniform(-shift, shift)], dim=1),
        ],
        dim=1,
    ).to(x.dtype)
    x = resample(x, theta)
    if sharpness > 0:
        amount = uniform(-sharpness, sharpness).view(b, 1, 1, 1).to(x.dtype)
        x = x + amount * (x - blur(x))
    if intensity > 0:
        contrast = uniform(1 - intensity, 1 + intensity).view(b, 1, 1, 1).to(x.dtype)
        brightness = uniform(-intensity, intensity).view(b, 1, 1, 1).to(x.dtype)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast + mean + brightness
    return x


def blur(x: Any) -> Any:
    """A float batch (B, C, H, W) smoothed by the 3x3 binomial kernel (1 2 1 / 4 each way), each
    channel alone, the border extended."""
    import torch
    import torch.nn.functional as F

    c = x.shape[1]
    row = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype, device=x.device)
    kernel = (row[:, None] * row[None, :]).expand(c, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)


def resample(x: Any, theta: Any) -> Any:
    """A float batch (B, C, H, W) moved by the affine maps ``theta`` (B, 2, 3), as training and
    test-time views both move images: bilinear, the border extended."""
    import torch.nn.functional as F

    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def rotate(x: Any, degrees: float) -> Any:
    """A float batch (B, C, H, W) turned by ``degrees`` about its centre (:func:`resample`); 0
    returns ``x`` itself."""
    if not degrees:
        return x
    import torch

    a = math.radians(degrees)
    theta = torch.tensor(
        [[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]],
        dtype=x.dtype,
        device=x.device,
    ).expand(x.shape[0], 2, 3)
    return resample(x, theta)


def mix_batch(x: Any, y: Any, kind: str, rng: np.random.Generator) -> tuple[Any, Any]:
    """Mixup (Beta(0.4, 0.4)) or cutmix (Beta(1, 1)) of a batch with a permutation of itself;
    ``y`` are soft targets (B, K)."""
    import torch

    b = x.shape[0]
    perm = torch.from_numpy(rng.permutation(b)).to(x.device)
    lam = float(rng.beta(0.4, 0.4) if kind == "mixup" else rng.beta(1.0, 1.0))
    if kind == "mixup":
        x = lam * x + (1 - lam) * x[perm]
    else:
        h, w = x.shape[-2:]
        cut = math.sqrt(1 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(0, cy - ch // 2), min(h, cy + ch // 2)
        x0, x1 = max(0, cx - cw // 2), min(w, cx + cw // 2)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return x, lam * y + (1 - lam) * y[perm]


# ----------------------------------------------------------------------------- training


@dataclass
class TaskData:
    """What the training processes need of a task (no test labels: there are none)."""

    task_type: str
    n_outputs: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    ordinal_alpha: float = 0.0
    intensity: float = 0.0
    precision: str = "auto"  # see OPTIONS
    tta_angle: float = 10.0  # see OPTIONS
    # Cross-fitting: the fold of every train image, then of every val image; None = no folds.
    fold_of: np.ndarray | None = None
    subsample: float = 0.0  # bagging: the share of train each run trains on; 0 = all

    @property
    def folds(self) -> int:
        return 0 if self.fold_of is None else int(self.fold_of.max()) + 1

    def pooled_labels(self) -> np.ndarray:
        """The labels of train, then val: what cross-fitted runs are scored against."""
        return np.concatenate([np.asarray(self.y_train), np.asarray(self.y_val)])


def class_groups(labels: np.ndarray, task_type: str) -> list[np.ndarray]:
    """The rows of each class, in class order (multi-label tasks: one group of all rows)."""
    labels = np.asarray(labels)
    n = len(labels)
    if task_type == MULTI_LABEL:
        return [np.arange(n)]
    flat = labels.reshape(n, -1)[:, 0]
    return [np.flatnonzero(flat == c) for c in np.unique(flat)]


def stratified_folds(labels: np.ndarray, folds: int, seed: int, task_type: str) -> np.ndarray:
    """A fold (0 .. folds - 1) for every image: each class dealt round-robin, in a random order
    of its images, so that every fold has about the same size and class shares (multi-label
    tasks: one random order)."""
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    dealt = 0
    for group in class_groups(labels, task_type):
        fold_of[rng.permutation(group)] = (dealt + np.arange(len(group))) % folds
        dealt += len(group)
    return fold_of


def stratified_share(labels: np.ndarray, share: float, seed: int, task_type: str) -> np.ndarray:
    """The sorted rows of a random ``share`` of each class's images (multi-label tasks: of all
    images), at least one of each class: what one bagged run trains on."""
    rng = np.random.default_rng(seed)
    groups = class_groups(labels, task_type)
    kept = [rng.permutation(g)[: max(1, round(share * len(g)))] for g in groups]
    return np.sort(np.concatenate(kept))


def ordinal_targets(classes: np.ndarray, n_classes: int, alpha: float) -> np.ndarray:
    """Soft ordinal labels (SORD: Diaz and Marathe, CVPR 2019): class ``k`` of an image of grade
    ``y`` gets a share proportional to ``exp(-alpha (k - y)^2)``, so that a neighbouring grade is
    a smaller mistake than a distant one. ``alpha`` 0 gives one-hot targets."""
    k = np.arange(n_classes, dtype=np.float64)
    y = np.asarray(classes, dtype=np.float64).reshape(-1, 1)
    if alpha <= 0:
        return (k == y).astype(np.float32)
    weights = np.exp(-alpha * (k - y) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


#: The training process's own runner, made once by :func:`_init_process`.
_RUNNER: list[Runner] = []


def _init_process(data: TaskData, device: str, width: int, batch_size: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _RUNNER[:] = [Runner(data, device, width, batch_size)]


def _train_job(config: Config, record: RunRecord, stop_at: float) -> RunRecord:
    return _RUNNER[0].train(config, record, stop_at)


def _probe_job(config: Config) -> float:
    return _RUNNER[0].probe(config)


class _Inline:
    """The executor interface, running each job at once in this process (one GPU)."""

    def __init__(self, initargs: tuple[Any, ...]) -> None:
        _init_process(*initargs)

    def submit(self, fn: Any, *args: Any) -> Any:
        from concurrent.futures import Future

        future: Future[Any] = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, **_: Any) -> None:
        _RUNNER.clear()


class Runner:
    """The data of one task on one device, and the training of runs on it."""

    def __init__(self, data: TaskData, device: str, width: int, batch_size: int) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        # The autocast type of training steps (and of predictions on a GPU); None = float32.
        name = training_precision(data.precision, device)
        self.train_dtype = None if name == "float32" else getattr(torch, name)
        self.task_type = data.task_type
        self.n_outputs = data.n_outputs
        self.width = width
        self.batch_size = batch_size
        self.intensity = data.intensity
        self.tta_angle = data.tta_angle
        self.n_train = len(data.x_train)
        self.fold_of = data.fold_of
        self.subsample = data.subsample
        # Cross-fitting trains on train and val: one tensor of both (train's rows first).
        fit = data.x_train if data.fold_of is None else np.concatenate([data.x_train, data.x_val])
        self.x_train = images_tensor(fit, self.device)
        self.x_val = images_tensor(data.x_val, self.device)
        self.x_test = images_tensor(data.x_test, self.device)
        self.y_val = np.asarray(data.y_val)
        labels = np.asarray(data.y_train) if data.fold_of is None else data.pooled_labels()
        self.labels = labels
        if self.task_type == MULTI_LABEL:
            self.y_train = torch.from_numpy(labels.astype(np.float32)).to(self.device)
        else:
            alpha = data.ordinal_alpha if self.task_type == ORDINAL else 0.0
            targets = ordinal_targets(labels.reshape(-1), self.n_outputs, alpha)
            self.y_train = torch.from_numpy(targets).to(self.device)
        self.in_channels = int(self.x_train.shape[1])
        # Channels-last on every device: on a CPU too, 18 to 37% more training images per
        # second for these networks, and faster predictions (benchmarks/RESULTS.md).
        self.memory_format = torch.channels_last
        self._class_weights: dict[float, Any] = {}
        self._whitening: dict[tuple[int, str, int], Any] = {}  # whitening stems' filters

    def probe(self, config: Config, steps: int = 4) -> float:
        """Seconds one epoch of ``config`` takes here, with its snapshot predictions, estimated
        from ``steps`` training steps and one prediction pass over a slice of val."""
        torch = self.torch
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        model = self.network(config)
        optimizer = self.optimizer(config, model)
        b = self.batch_size
        times = []
        for step in range(steps + 1):
            t0 = time.perf_counter()
            model.train()
            start = (step * b) % max(1, len(self.x_train) - b)
            x = self.prepare(self.x_train[start : start + b])
            x = augment(x, config.aug, generator, self.intensity, config.sharpness, config.mirror)
            x = x.contiguous(memory_format=self.memory_format)
            y = self.y_train[start : start + b]
            moved = self.sam_ascent(model, x, y, config) if config.sam else []
            with self.autocast(training=True):
                loss = self.loss(model(x), y, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.sam_descent(moved)
            optimizer.step()
            times.append(time.perf_counter() - t0)
        per_step = float(np.median(times[1:]))  # the first step pays for warm-up
        t0 = time.perf_counter()
        sample = self.x_val[:128]
        self.predict(model, sample, config.turns, self.angles(config), config.mirror)
        per_image = (time.perf_counter() - t0) / len(sample)  # every view
        n_pred = len(self.x_val) + len(self.x_test)  # predicted after half the epochs
        return per_step * math.ceil(len(self.x_train) / b) + 0.5 * per_image * n_pred

    def angles(self, config: Config) -> tuple[float, ...]:
        """The rotations (degrees) of ``config``'s test-time views: 0 and +-``tta_angle`` for a
        configuration trained with small rotations ("geo", "zoom"), else 0 alone."""
        if config.aug in ("geo", "zoom") and self.tta_angle:
            return (0.0, -self.tta_angle, self.tta_angle)
        return (0.0,)

    def views(self, config: Config) -> int:
        """How many test-time views of each image ``config`` predicts: every angle and quarter
        turn, each mirrored unless ``config.mirror`` is false."""
        return (2 if config.mirror else 1) * config.turns * len(self.angles(config))

    def network(self, config: Config) -> Any:
        """The network of ``config`` on this task's device."""
        model = build_network(config, self.width, self.in_channels, self.n_outputs)
        if config.whiten:
            at = next(i for i, m in enumerate(model) if getattr(m, "whitening", False))
            key = (config.whiten, config.norm, config.upsample)
            if key not in self._whitening:
                # Train's own images (its rows come first), as the stem receives them.
                with self.torch.no_grad():
                    images = model[:at](
                        self.prepare(self.x_train[: self.n_train][:WHITENING_IMAGES])
                    )
                self._whitening[key] = whitening_filters(images, config.whiten)
            with self.torch.no_grad():
                model[at].weight.copy_(self._whitening[key])
        return model.to(self.device, memory_format=self.memory_format)

    def optimizer(self, config: Config, model: Any) -> Any:
        """The optimiser of ``config``: AdamW, or SGD with Nesterov momentum; the schedule
        sets its learning rate at every step."""
        torch = self.torch
        if config.optimizer == "sgd":
            return torch.optim.SGD(
                model.parameters(),
                lr=config.lr,
                momentum=0.9,
                nesterov=True,
                weight_decay=config.weight_decay,
            )
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def averaged(self, model: Any, horizon_steps: float) -> Any:
        """An exponential moving average of ``model``'s weights and buffers, started at them
        (the untrained network), each step weighing ``1 / horizon_steps`` (Polyak averaging;
        ``update_parameters`` after every step)."""
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        decay = 1.0 - 1.0 / max(1.0, horizon_steps)
        averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        averaged.update_parameters(model)  # the first update copies
        return averaged

    def sam_ascent(self, model: Any, x: Any, y: Any, config: Config) -> list[tuple[Any, Any]]:
        """SAM's first pass: the batch's gradient here, and the weights moved ``config.sam``
        (L2) along it; returns each moved parameter with its move, for :meth:`sam_descent`.
        The gradient is unscaled: only its direction counts."""
        torch = self.torch
        with self.autocast(training=True):
            loss = self.loss(model(x), y, config)
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        pairs = [(p, g.float()) for p, g in zip(params, grads) if g is not None]
        norm = torch.norm(torch.stack([g.norm() for _, g in pairs])) + 1e-12
        moved = []
        with torch.no_grad():
            for p, g in pairs:
                e = (g * (config.sam / norm)).to(p.dtype)
                p.add_(e)
                moved.append((p, e))
        return moved

    def sam_descent(self, moved: list[tuple[Any, Any]]) -> None:
        """The weights moved back where they were, keeping the gradient taken up there."""
        with self.torch.no_grad():
            for p, e in moved:
                p.sub_(e)

    def split(self, fold: int, seed: int = 0) -> tuple[Any, Any, np.ndarray]:
        """The rows of the training tensor a run of ``fold`` trains on, the images it is
        scored on and their labels: all of train and val but the fold, and the fold; without
        cross-fitting (or for fold -1), train (bagging: the run's own share of it, drawn by its
        ``seed``) and val."""
        torch = self.torch
        if self.fold_of is None or fold < 0:
            if 0 < self.subsample < 1:
                rows = stratified_share(self.labels, self.subsample, seed, self.task_type)
                return torch.from_numpy(rows).to(self.device), self.x_val, self.y_val
            return torch.arange(self.n_train, device=self.device), self.x_val, self.y_val
        held = self.fold_of == fold
        rows, fit = (torch.from_numpy(np.flatnonzero(m)).to(self.device) for m in (held, ~held))
        return fit, self.x_train[rows], self.labels[held]

    def prepare(self, batch: Any) -> Any:
        return batch.float().div_(255.0).sub_(0.5).div_(0.5)

    def autocast(self, training: bool = False) -> Any:
        """Mixed precision for a training step, or for a prediction on a GPU (on a CPU,
        bfloat16's 8-bit mantissa would tie scores that the AUC tells apart)."""
        import contextlib

        if self.train_dtype is None or not (training or self.cuda):
            return contextlib.nullcontext()
        return self.torch.autocast(self.device.type, dtype=self.train_dtype)

    def loss(self, logits: Any, target: Any, config: Config) -> Any:
        """Cross-entropy with ``config``'s label smoothing; with ``config.balance``, each class's
        share of a target weighs ``(images of the class / images per class) ** -balance``
        (single-label tasks), the batch's loss their weighted mean."""
        torch = self.torch
        smoothing = config.smoothing
        if self.task_type == MULTI_LABEL:
            target = target * (1 - smoothing) + 0.5 * smoothing
            return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target)
        target = target * (1 - smoothing) + smoothing / self.n_outputs
        log_p = torch.log_softmax(logits.float(), dim=1)
        if config.balance:
            weighted = target * self.class_weights(config.balance)
            return torch.sum(-weighted * log_p) / weighted.sum()
        return torch.sum(-target * log_p, dim=1).mean()

    def class_weights(self, balance: float) -> Any:
        """Each class's weight for :meth:`loss`: its images in the training labels, against
        their mean per class, to the power ``-balance`` (a class without images counts one)."""
        if balance not in self._class_weights:
            labels = self.labels.reshape(-1).astype(np.int64)
            counts = np.maximum(np.bincount(labels, minlength=self.n_outputs), 1)
            weights = (counts / counts.mean()) ** -balance
            self._class_weights[balance] = self.torch.tensor(
                weights, dtype=self.torch.float32, device=self.device
            )
        return self._class_weights[balance]

    def predict(
        self,
        model: Any,
        images: Any,
        turns: int = 1,
        angles: tuple[float, ...] = (0.0,),
        mirror: bool = True,
    ) -> dict[str, np.ndarray]:
        """Probabilities of ``images``: ``plain`` (the first view; ``angles`` start with 0), and
        ``tta``, the mean over the image's views: the image turned by each of ``angles``
        (degrees) and by 90 degrees ``turns - 1`` times, each view also mirrored with ``mirror``
        (the square's eight symmetries for 4 turns); one forward pass of each view."""
        torch = self.torch
        model.eval()
        plain, tta = [], []
        with torch.inference_mode(), self.autocast():
            for start in range(0, len(images), 512):
                x = self.prepare(images[start : start + 512])
                views = [rotate(x, angle) for angle in angles]
                views = [torch.rot90(v, k, dims=(2, 3)) for v in views for k in range(turns)]
                if mirror:
                    views += [torch.flip(v, dims=[3]) for v in views]
                logits = torch.stack(
                    [model(v.contiguous(memory_format=self.memory_format)).float() for v in views]
                )
                if self.task_type == MULTI_LABEL:
                    p = torch.sigmoid(logits)
                else:
                    p = torch.softmax(logits, dim=-1)
                plain.append(p[0])
                tta.append(p.mean(0))
        return {
            key: torch.cat(parts).cpu().numpy().astype(np.float64)
            for key, parts in (("plain", plain), ("tta", tta))
        }

    def train(self, config: Config, record: RunRecord, stop_at: float) -> RunRecord:
        """One run of ``config``: AdamW, a short linear warm-up, cosine decay to zero, and the
        mean of the snapshot predictions (plain and with test-time views) after every epoch of
        the second half of the schedule, and at its end.

        The schedule runs over ``record.epochs`` epochs (epoch-bounded: deterministic), or over
        ``record.allotted_s`` seconds of wall time (time-bounded: however many epochs fit, so
        that a run always finishes its schedule whatever the machine's speed). Either way it
        stops at ``stop_at`` and says so (``complete`` false)."""
        from decathlon.metrics import auc

        torch = self.torch
        torch.manual_seed(record.seed)
        generator = torch.Generator().manual_seed(record.seed)
        rng = np.random.default_rng(record.seed)
        model = self.network(config)
        optimizer = self.optimizer(config, model)
        scaler = torch.amp.GradScaler("cuda", enabled=self.train_dtype == torch.float16)
        fit_rows, x_held, y_held = self.split(record.fold, record.seed)
        n = len(fit_rows)
        # A last batch of one image is dropped (batch norm), but never an epoch's only batch:
        # a run of no steps never looks at the clock (a time-bounded one looped until the kill).
        steps_per_epoch = max(
            1, len(range(0, n - (1 if n % self.batch_size == 1 else 0), self.batch_size))
        )
        timed = record.allotted_s is not None
        started = time.perf_counter()
        # Time-bounded: the schedule ends at the allotment or at stop_at, whichever is first.
        budget_s = min(record.allotted_s or math.inf, stop_at - time.time())
        total_steps = steps_per_epoch * record.epochs
        averaged = self.averaged(model, config.ema * steps_per_epoch) if config.ema else None

        snapshot_s = [0.0]  # the last snapshot's seconds: kept free at a timed schedule's end

        def progress(step: int) -> float:
            if timed:
                return (time.perf_counter() - started) / max(budget_s - snapshot_s[0], 1e-9)
            return step / max(1, total_steps)

        def snapshot() -> None:
            t0 = time.perf_counter()
            angles = self.angles(config)
            scorer = model if averaged is None else averaged
            for split, images in ((record.val, x_held), (record.test, self.x_test)):
                views = self.predict(scorer, images, config.turns, angles, config.mirror)
                for key, p in views.items():
                    split[key] = split.get(key, 0) + p
            record.snapshots += 1
            snapshot_s[0] = time.perf_counter() - t0

        step, done, last_snapshot_step = 0, False, -1
        epoch = 0
        while not done:
            if not timed and (epoch >= record.epochs or time.time() >= stop_at):
                break
            epoch += 1
            epoch_started = time.perf_counter()
            model.train()
            order = fit_rows[torch.randperm(n, generator=generator).to(self.device)]
            for start in range(0, steps_per_epoch * self.batch_size, self.batch_size):
                p = progress(step)
                if p >= 1.0 or time.time() >= stop_at - snapshot_s[0]:
                    done = True
                    break
                warm = 0.03
                factor = (
                    p / warm
                    if p < warm
                    else 0.5 * (1 + math.cos(math.pi * (p - warm) / (1 - warm)))
                )
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * max(factor, 1e-3)
                index = order[start : start + self.batch_size]
                x = augment(
                    self.prepare(self.x_train[index]),
                    config.aug,
                    generator,
                    self.intensity,
                    config.sharpness,
                    config.mirror,
                )
                y = self.y_train[index]
                if config.mix:
                    x, y = mix_batch(x, y, config.mix, rng)
                x = x.contiguous(memory_format=self.memory_format)
                moved = self.sam_ascent(model, x, y, config) if config.sam else []
                with self.autocast(training=True):
                    loss = self.loss(model(x), y, config)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                self.sam_descent(moved)
                scaler.step(optimizer)
                scaler.update()
                if averaged is not None:
                    averaged.update_parameters(model)
                step += 1
            else:
                record.epochs_run = epoch
                if not record.snapshots:
                    # Until one is timed: a snapshot (a pass over val and test per view, each
                    # about a third of a training step's cost per image) at most this long.
                    per_image = (time.perf_counter() - epoch_started) / n
                    n_scored = len(x_held) + len(self.x_test)
                    snapshot_s[0] = per_image * self.views(config) / 2 * n_scored
                if progress(step) >= 0.5 or (not timed and 2 * epoch > record.epochs):
                    snapshot()
                    last_snapshot_step = step
        if step > 0 and last_snapshot_step != step and (record.snapshots == 0 or timed):
            snapshot()  # the end of a time-bounded schedule (lr near zero), or a cut run's last
        record.seconds = time.perf_counter() - started
        if timed:
            # A schedule squeezed by less than a fifth still ran its course.
            record.complete = 0.8 * (record.allotted_s or 0) <= budget_s
        else:
            record.complete = record.epochs_run == record.epochs
        if record.snapshots:
            for key in list(record.val):
                record.val[key] = record.val[key] / record.snapshots
                record.test[key] = record.test[key] / record.snapshots
            record.val_auc = _safe_auc(auc, self.task_type, y_held, record.val["plain"])
        return record


def _safe_auc(auc: Any, task_type: str, y: np.ndarray, scores: np.ndarray) -> float:
    if not np.all(np.isfinite(scores)):
        return math.nan
    try:
        return float(auc(task_type, y, scores))
    except ValueError:
        return math.nan


# ----------------------------------------------------------------------------- the ensemble


def fast_auc(task_type: str, y_true: np.ndarray, y_score: np.ndarray) -> float:
    """:func:`decathlon.metrics.auc` by the rank-sum (Mann-Whitney) formula, vectorised over
    classes or labels: the same value (ties get average ranks, as the ROC's trapezoids count
    them), about a hundred times faster, for the inner loop of ensemble selection. NaN where a
    class or label has no positive or no negative example."""
    from scipy.stats import rankdata

    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_score.ndim == 1:
        y_score = y_score[:, None]
    if task_type == MULTI_LABEL:
        positive = y_true.astype(bool)
        scores = y_score
    elif task_type == BINARY:
        positive = (y_true.reshape(-1) == 1)[:, None]
        scores = y_score[:, -1:]
    else:
        labels = y_true.reshape(-1)
        positive = labels[:, None] == np.arange(y_score.shape[1])[None, :]
        scores = y_score
    if not np.all(np.isfinite(scores)):
        return math.nan
    n_pos = positive.sum(axis=0)
    n_neg = len(positive) - n_pos
    if np.any(n_pos == 0) or np.any(n_neg == 0):
        return math.nan
    ranks = rankdata(scores, axis=0)
    rank_sum = np.where(positive, ranks, 0.0).sum(axis=0)
    aucs = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return float(np.mean(aucs))


#: The share of validation resamples in which the ensemble without test-time views must beat
#: the one with them to be chosen instead (:func:`plain_wins_share`).
PLAIN_WINS_NEEDED = 0.95


def plain_wins_share(
    y: np.ndarray,
    plain: np.ndarray,
    tta: np.ndarray,
    task_type: str,
    seed: int,
    resamples: int = 200,
    until: float = math.inf,
    stopped: list[str] | None = None,
) -> float:
    """The share of ``resamples`` bootstrap resamples of the validation images (the same images
    for both) in which the scores without test-time views have the higher AUC. The views are
    the training's own transforms, so they are kept unless validation shows them worse beyond
    its noise: on 78 or 120 images, a difference of a few thousandths in AUC is a coin toss
    (benchmarks/RESULTS.md, "test-time views at small angles"). A resample that lacks a class
    counts as no win; views without finite scores where the plain ones have them lose outright.
    At ``until`` (``time.time()``) it stops and gives the share of the resamples drawn so far
    (none: 0, the views kept); it then appends its name to ``stopped`` where that is given."""
    if math.isnan(fast_auc(task_type, y, tta)) and not math.isnan(fast_auc(task_type, y, plain)):
        return 1.0
    rng = np.random.default_rng(seed)
    n = len(y)
    wins = drawn = 0
    for _ in range(resamples):
        if time.time() >= until:
            if stopped is not None:
                stopped.append("plain_wins_share")
            break
        rows = rng.integers(0, n, n)
        wins += fast_auc(task_type, y[rows], plain[rows]) > fast_auc(task_type, y[rows], tta[rows])
        drawn += 1
    return wins / drawn if drawn else 0.0


def ensemble_selection(
    val_scores: list[np.ndarray],
    y_val: np.ndarray,
    task_type: str,
    *,
    size: int,
    bags: int,
    seed: int,
    init: int = 3,
    until: float = math.inf,
    stopped: list[str] | None = None,
) -> np.ndarray:
    """Weights over the candidates: greedy forward selection with replacement on val AUC
    (Caruana et al., 2004), started from the ``init`` best candidates ("sorted initialisation"),
    averaged over ``bags`` random halves of the candidates ("bagged ensemble selection").
    Where no candidate's AUC is defined, the candidates with finite scores weigh alike.

    At ``until`` (``time.time()``) the selection stops where it is: the bag under way keeps the
    members chosen so far (at least its ``init`` best), and no further bag starts; it then
    appends its name to ``stopped`` where that is given (once, and only where a step or a bag
    was left undone)."""
    n = len(val_scores)
    singles = np.array([fast_auc(task_type, y_val, s) for s in val_scores])
    singles = np.where(np.isnan(singles), -np.inf, singles)
    rng = np.random.default_rng(seed)
    weights = np.zeros(n)
    cut = False
    for bag in range(max(1, bags)):
        if bag > 0 and time.time() >= until:
            cut = True
            break
        if bags <= 1 or n < 4:
            pool = np.arange(n)
        else:
            pool = np.sort(rng.choice(n, size=max(2, (n + 1) // 2), replace=False))
        pool = pool[np.isfinite(singles[pool])]
        if len(pool) == 0:
            continue
        ranked = pool[np.argsort(-singles[pool], kind="stable")]
        counts = np.zeros(n)
        chosen = list(ranked[: min(init, size, len(ranked))])
        for i in chosen:
            counts[i] += 1
        total = sum(val_scores[i] for i in chosen)
        for _ in range(max(0, size - len(chosen))):
            if time.time() >= until:
                cut = True
                break
            best, best_auc = None, -np.inf
            for i in pool:
                score = fast_auc(task_type, y_val, (total + val_scores[i]) / (len(chosen) + 1))
                if not math.isnan(score) and score > best_auc + 1e-12:
                    best, best_auc = i, score
            if best is None:
                break
            chosen.append(best)
            counts[best] += 1
            total = total + val_scores[best]
        weights += counts / counts.sum()
    if cut and stopped is not None:
        stopped.append("ensemble_selection")
    if weights.sum() == 0:
        # No AUC defined (val lacks a class, or a label is all 0 or all 1 there): the mean of
        # the runs with finite scores; one that diverged would make every score NaN.
        weights[:] = [float(np.all(np.isfinite(s))) for s in val_scores]
        if weights.sum() == 0:
            weights[:] = 1.0
    return weights / weights.sum()


@dataclass(frozen=True)
class Calibration:
    """Scores recalibrated as ``softmax(temperature * log p + bias)`` (for labels, the sigmoid
    of ``temperature * logit p + bias``); the identity is temperature 1, bias 0."""

    task_type: str
    temperature: float = 1.0
    bias: tuple[float, ...] = ()

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        z = _logits(self.task_type, scores) * self.temperature + np.asarray(self.bias or 0.0)
        if self.task_type == MULTI_LABEL:
            return 0.5 * (1.0 + np.tanh(0.5 * z))  # the sigmoid, without overflow
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)


def _logits(task_type: str, scores: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1.0 - 1e-7)
    return np.log(p) - np.log1p(-p) if task_type == MULTI_LABEL else np.log(p)


def log_loss(task_type: str, y_true: np.ndarray, scores: np.ndarray) -> float:
    """Mean log-loss of scores (probabilities) against the labels: cross-entropy over classes,
    or binary cross-entropy averaged over labels."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1.0 - 1e-7)
    if task_type == MULTI_LABEL:
        y = np.asarray(y_true, dtype=np.float64)
        return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))
    labels = np.asarray(y_true).reshape(-1).astype(int)
    p = p / p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(labels)), labels])))


def calibrate(val: np.ndarray, y_val: np.ndarray, task_type: str) -> Calibration:
    """A temperature and a bias per class (per label) that minimise the validation log-loss
    (the temperature scaling and "vector scaling" of Guo et al., 2017, with one temperature).

    A class (label) that validation lacks, or has only, keeps bias 0: its fitted bias would run
    to the bound. The identity is returned when the fit is no better on validation."""
    from scipy.optimize import minimize

    val = np.asarray(val, dtype=np.float64)
    n_outputs = val.shape[1]
    identity = Calibration(task_type, 1.0, (0.0,) * n_outputs)
    if not np.all(np.isfinite(val)):
        return identity
    if task_type == MULTI_LABEL:
        y = np.asarray(y_val, dtype=np.float64)
        free = (y.min(axis=0) == 0) & (y.max(axis=0) == 1)
    else:
        counts = np.bincount(np.asarray(y_val).reshape(-1).astype(int), minlength=n_outputs)
        free = counts > 0
        free[0] = False  # softmax: one bias is redundant
    free_index = np.flatnonzero(free)

    def unpack(w: np.ndarray) -> Calibration:
        bias = np.zeros(n_outputs)
        bias[free_index] = w[1:]
        return Calibration(task_type, float(w[0]), tuple(float(b) for b in bias))

    def objective(w: np.ndarray) -> float:
        return log_loss(task_type, y_val, unpack(w)(val))

    start = np.r_[1.0, np.zeros(len(free_index))]
    bounds = [(0.05, 20.0)] + [(-10.0, 10.0)] * len(free_index)
    fitted = minimize(objective, start, method="L-BFGS-B", bounds=bounds)
    if not np.all(np.isfinite(fitted.x)) or objective(fitted.x) >= objective(start):
        return identity
    return unpack(fitted.x)


# ----------------------------------------------------------------------------- the adapter


def run(task: Task) -> Predictions:
    """Race the portfolio under the task's budget, ensemble the survivors, predict."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    if not logging.getLogger().handlers:  # the worker sets none: progress goes to the task's log
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.time()
    opts = {**OPTIONS, **task.options}
    log.info("%.0f s to the deadline", task.deadline - started)
    device = "cpu"
    if task.device == "cuda":
        import torch

        if torch.cuda.is_available():
            device = "cuda"
        else:
            log.warning("the harness gave device cuda, but torch sees no CUDA device: using CPU")
    n_jobs = max(1, int(task.n_jobs))
    # On a CPU, one single-threaded training process per core: small networks scale badly
    # over threads, and much worse when other processes share the cores.
    processes = 1 if device == "cuda" else int(opts["processes"]) or n_jobs
    threads = int(opts["threads"]) or max(1, n_jobs // processes)
    width = int(opts["width"]) or (32 if device == "cuda" else 16)
    batch_size = int(opts["batch_size"])
    eta = max(2, int(opts["eta"]))
    epoch_bounded = task.budget.epochs is not None
    max_epochs = int(task.budget.epochs or opts["max_epochs"])
    min_epochs = max(1, min(int(opts["min_epochs"]), max_epochs))
    end = task.deadline
    if task.budget.time_seconds is not None:
        end = min(end, started + float(task.budget.time_seconds))
    # The margin: the ensemble, the last snapshots and writing the result, on a loaded machine.
    stop_at = end - max(FINAL_MARGIN_S, 0.1 * (end - started))
    data = TaskData(
        task.dataset.task,
        task.dataset.n_outputs,
        np.array(task.x_train),
        np.array(task.y_train),
        np.array(task.x_val),
        np.array(task.y_val),
        np.array(task.x_test),
        float(opts["ordinal_alpha"]),
        float(opts["intensity"]),
        precision=str(opts["precision"]),
        tta_angle=float(opts["tta_angle"]),
        subsample=float(opts["subsample"]),
    )
    folds = int(opts["folds"])
    if folds > 1:
        data.fold_of = stratified_folds(data.pooled_labels(), folds, task.seed, data.task_type)
    initargs = (data, device, width, batch_size, threads)
    # Imported here once, so that forked processes inherit it rather than import it again
    # (seconds on a loaded machine); no torch operation runs here before the fork. The metrics'
    # scikit-learn too, which would otherwise be imported in the time left for the ensemble.
    import sklearn.metrics  # noqa: F401
    import torch  # noqa: F401

    if processes == 1:
        executor: Any = _Inline(initargs)
    else:
        # fork, not spawn: the children inherit the harness's mounted packages; this process
        # never imports torch, so no OpenMP or CUDA state is forked.
        executor = ProcessPoolExecutor(
            processes, mp_context=get_context("fork"), initializer=_init_process, initargs=initargs
        )
    try:
        result = _race(
            task,
            executor,
            data,
            opts,
            processes=processes,
            eta=eta,
            max_epochs=max_epochs,
            min_epochs=min_epochs,
            epoch_bounded=epoch_bounded,
            stop_at=stop_at,
            end=end,
        )
    finally:
        executor.shutdown(cancel_futures=True)
    result.info.update(
        {
            "device": device,
            "precision": training_precision(data.precision, device),
            "width": width,
            "ordinal_alpha": data.ordinal_alpha if task.dataset.task == ORDINAL else None,
            "intensity": data.intensity,
            "tta_angle": data.tta_angle,
            "whiten": str(opts["whiten"]),
            "subsample": data.subsample or None,
            "processes": processes,
            "threads_per_process": threads,
            "search_s": round(time.time() - started, 1),
        }
    )
    return result


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU does bfloat16 arithmetic in hardware (Linux's flags avx512_bf16 or
    amx_bf16); elsewhere torch emulates it, slower than float32."""
    try:
        flags = Path(cpuinfo).read_text(errors="replace").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def training_precision(precision: str, device: str) -> str:
    """The arithmetic of training for the option ``precision`` on ``device``: "float16",
    "bfloat16" (autocast) or "float32"."""
    if precision == "fp32":
        return "float32"
    if device.startswith("cuda"):
        return "float16"
    return "bfloat16" if cpu_has_bf16() else "float32"


def rounds_of_rung(share_s: float, rounds: int, longest_s: float, previous_s: float) -> int:
    """Rounds of runs (one run per process each) for a rung of successive halving with a time
    budget of ``share_s`` seconds: at least ``rounds`` (every survivor runs once, even if that
    makes its runs short).

    Beyond that, time that would make runs longer than ``longest_s`` (max_epochs of the slowest
    survivor) goes to more seeds of the survivors instead (diversity rather than over-fitting),
    but only as far as runs stay as long as ``previous_s``, the rung before's; past that, runs
    get longer than ``longest_s``. Shorter runs than the rung before's would undo the halving
    (a plan of three rungs once split its last into 16 runs of 23 s after runs of 40 s, and they
    scored lower on validation)."""
    more = math.ceil(share_s / longest_s) if 0 < longest_s < math.inf else rounds
    if previous_s > 0:
        more = min(more, math.floor(share_s / previous_s + 1e-6))
    return max(rounds, more)


def _race(
    task: Task,
    executor: Any,
    data: TaskData,
    opts: dict[str, Any],
    *,
    processes: int,
    eta: int,
    max_epochs: int,
    min_epochs: int,
    epoch_bounded: bool,
    stop_at: float,
    end: float,
) -> Predictions:
    """Successive halving with restarts over :data:`PORTFOLIO` (or the configurations the
    option ``configs`` names), then the ensemble."""
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from decathlon.metrics import auc

    records: list[RunRecord] = []
    deadline_cut = False
    killed = ""  # why the training processes' pool broke, if it did
    raced = portfolio_of(opts["configs"])
    raced = whitened(raced, str(opts["whiten"]), data.x_train)
    raced, handedness = mirrored(raced, str(opts["mirror"]), data.x_train)
    if handedness is not None:
        log.info("mirrored images told from originals with AUC %.3f", handedness)
    order = [c.name for c in raced]
    configs = {c.name: c for c in raced}

    def seed_of(name: str, rung: int, repeat: int) -> int:
        return int(task.seed) * 1_000_003 + rung * 10_007 + order.index(name) * 101 + repeat

    # Seconds per epoch of each configuration (time budget only): one probe of the first,
    # scaled by the others' relative costs; it sizes how many configurations can be raced.
    cost: dict[str, float] = {}
    if not epoch_bounded:
        # The probe runs alone and briefly: allow for the processes slowing each other down.
        first = 1.3 * float(executor.submit(_probe_job, raced[0]).result()) / raced[0].cost
        cost = {c.name: first * c.cost for c in raced}
        log.info("probed seconds per epoch: %s", {k: round(v, 2) for k, v in cost.items()})

    def wall_left(slack: float = SLACK) -> float:
        # Less a slack: a loaded machine makes every estimate short.
        return slack * max(0.0, stop_at - time.time())

    def rungs_for(n: int) -> int:
        return 1 + int(math.floor(math.log(n, eta) + 1e-9))

    # Cross-fitting: every run is one training job per fold.
    folds = data.folds
    jobs_per_run = max(1, folds)
    y_pooled = data.pooled_labels()

    def rounds_for(n_survivors: int) -> int:
        return math.ceil(n_survivors * jobs_per_run / processes)

    # How many configurations to race: all with an epoch budget; with a time budget, the most
    # (in portfolio order) whose first-rung runs still get min_epochs each.
    n = len(order)
    if not epoch_bounded:
        while n > 1:
            per_run = wall_left() / rungs_for(n) / rounds_for(n)
            if per_run >= min_epochs * max(cost[c] for c in order[:n]):
                break
            n -= 1
    n_rungs = rungs_for(n)
    r0 = max(min_epochs, min(max_epochs, round(max_epochs / eta ** (n_rungs - 1))))
    if int(opts["r0"]) > 0:
        r0 = int(opts["r0"])
    log.info(
        "%d of %d configurations, %d rungs, %s",
        n,
        len(order),
        n_rungs,
        f"r0 = {r0} epochs" if epoch_bounded else f"{wall_left():.0f} s of wall time to fill",
    )

    def launch(jobs: list[RunRecord]) -> None:
        nonlocal deadline_cut, killed
        finished, lost = [], set()
        for job, future in zip(jobs, submitted(jobs)):  # plan order, whatever order they end in
            try:
                record = future.result()
            except BrokenProcessPool as error:
                # A training process killed from outside (the OOM killer under --memory-mb, a
                # signal): the runs that finished still make the ensemble; no run starts again.
                killed = killed or f"a training process was killed ({error})"
                log.warning(
                    "rung %d %s seed %d: its process was killed", job.rung, job.config, job.seed
                )
                lost.add(id(job))
                finished.append(job)  # no scores: left out below
                continue
            if record.epochs_run:
                cost[record.config] = record.seconds / record.epochs_run
            if not record.complete:
                deadline_cut = True
            finished.append(record)
        if folds:
            finished = [
                cross_fitted(finished[i : i + folds], data.fold_of, y_pooled, task.dataset.task)
                for i in range(0, len(finished), folds)
            ]
        for record in finished:
            if record.snapshots:
                records.append(record)
            if id(record) in lost:
                continue
            log.info(
                "rung %d %s seed %d: %d epochs in %.1f s, val AUC %.4f%s",
                record.rung,
                record.config,
                record.seed,
                record.epochs_run,
                record.seconds,
                record.val_auc,
                "" if record.complete else " (cut by the deadline)",
            )

    def submitted(jobs: list[RunRecord]) -> list[Any]:
        futures: list[Any] = []
        for job in jobs:
            try:
                futures.append(executor.submit(_train_job, configs[job.config], job, stop_at))
            except BrokenProcessPool as error:
                failed: Any = Future()
                failed.set_exception(error)
                futures.append(failed)
        return futures

    survivors = order[:n]
    plan: list[dict[str, Any]] = []
    previous_s = 0.0  # the seconds of each run of the rung before (time budget)
    for rung in range(n_rungs):
        if rung > 0:
            score = {}
            for name in survivors:
                aucs = [
                    r.val_auc for r in records if r.config == name and not math.isnan(r.val_auc)
                ]
                score[name] = float(np.mean(aucs)) if aucs else -math.inf
            keep = max(1, math.ceil(len(survivors) / eta))
            survivors = sorted(survivors, key=lambda c: -score[c])[:keep]
        if time.time() >= stop_at:
            deadline_cut = True
            break
        if epoch_bounded:
            # r0, eta r0, eta^2 r0 ... epochs; one run per survivor.
            epochs = min(max_epochs, r0 * eta**rung)
            count, allotted = len(survivors), None
        else:
            # Successive halving's equal share of the time per rung, in whole rounds of the
            # processes (none idles at the rung's barrier); spare places go to more seeds of
            # the survivors. The last rung takes all the time left.
            last = rung == n_rungs - 1
            share = wall_left(0.97 if last else SLACK) / (n_rungs - rung)
            rounds = rounds_of_rung(
                share,
                rounds_for(len(survivors)),
                max_epochs * max(cost[c] for c in survivors),
                previous_s,
            )
            # Whole runs (all their folds) in the rounds' places; no process idles for long.
            count = max(len(survivors), rounds * processes // jobs_per_run)
            epochs = 0
            allotted = share / math.ceil(count * jobs_per_run / processes)
            previous_s = allotted
        jobs = [
            RunRecord(
                survivors[i % len(survivors)],
                rung,
                seed_of(survivors[i % len(survivors)], rung, i // len(survivors)),
                epochs,
                allotted,
                fold,
            )
            for i in range(count)
            for fold in (range(folds) if folds else [-1])
        ]
        plan.append(
            {
                "rung": rung,
                "configs": list(survivors),
                "runs": count,
                **({"folds": folds} if folds else {}),
                **(
                    {"epochs": epochs}
                    if epoch_bounded
                    else {"seconds_per_run": round(allotted or 0.0, 1)}
                ),
            }
        )
        launch(jobs)
        if deadline_cut or killed:
            break
    if killed:
        log.warning("%s: the search stops, the runs that finished make the ensemble", killed)
    if not records and killed:
        raise RuntimeError(f"{killed} before any run finished")
    if not records:
        # Nothing finished: one short run of the cheapest configuration, up to a few seconds
        # before the hard limit, rather than no prediction at all.
        deadline_cut = True
        cheapest = min(order, key=lambda c: configs[c].cost)
        record = RunRecord(cheapest, len(plan), seed_of(cheapest, len(plan), 0), min_epochs)
        record = executor.submit(
            _train_job, configs[cheapest], record, fallback_stop(task.deadline, time.time())
        ).result()
        if record.snapshots:
            records.append(record)
        plan.append({"rung": len(plan), "configs": [cheapest], "runs": 1, "fallback": True})
    if not records:
        raise RuntimeError("the deadline left no time for a single training epoch")

    # The ensemble: selection over runs, with and without TTA; TTA unless validation shows the
    # scores without it better beyond its own noise.
    # Cross-fitted runs are chosen and calibrated by their out-of-fold scores of train and val
    # (the fallback run, trained on train, by val); what the harness gets for val is val's rows.
    pooled = folds > 0 and len(records[0].val["plain"]) == len(y_pooled)
    y_val = y_pooled if pooled else data.y_val
    val_rows = np.arange(len(data.y_train), len(y_pooled)) if pooled else np.arange(len(y_val))
    kind = task.dataset.task
    chosen: dict[str, Any] = {}
    # Selection costs (runs x steps x bags) AUCs of val: minutes for hundreds of runs on
    # chestmnist's 11,219 images, more than the margin left for it. It stops where it is at
    # the end less RESULT_RESERVE_S, or less half the margin where that is less (the
    # calibration, the kept runs and the result come after); each key gets half the time left.
    select_until = end - min((end - stop_at) / 2, RESULT_RESERVE_S)
    stopped: list[str] = []  # what stopped at its time with work left (the notes' selection_cut)
    for i, key in enumerate(("plain", "tta")):
        weights = ensemble_selection(
            [r.val[key] for r in records],
            y_val,
            kind,
            size=int(opts["ensemble_size"]),
            bags=int(opts["bags"]),
            seed=task.seed,
            until=time.time() + (select_until - time.time()) / (2 - i),
            stopped=stopped,
        )
        val = weighted(weights, [r.val[key] for r in records])
        chosen[key] = (weights, val, _safe_auc(auc, kind, y_val, val))
    plain_wins = plain_wins_share(
        y_val,
        chosen["plain"][1],
        chosen["tta"][1],
        kind,
        task.seed,
        until=select_until,
        stopped=stopped,
    )
    selection_cut = bool(stopped)
    key = "plain" if plain_wins >= PLAIN_WINS_NEEDED else "tta"
    weights, val, val_auc = chosen[key]
    test = weighted(weights, [r.test[key] for r in records])
    calibration = Calibration(kind)
    val_loss = log_loss(kind, y_val, val)
    if opts["calibrate"]:
        calibration = calibrate(val, y_val, kind)
        val, test = calibration(val), calibration(test)
    runs_file = None
    if opts["keep_runs"]:
        try:
            keep_runs(
                task.output_dir / RUNS_FILE, kind, records, weights, key, calibration, val_rows
            )
            runs_file = RUNS_FILE
        except OSError as error:  # a full disk costs the file, not the task's result
            log.warning("could not keep the runs' scores: %s", error)
    members = [
        {"config": r.config, "rung": r.rung, "seed": r.seed, "weight": round(float(w), 4)}
        for w, r in zip(weights, records)
        if w > 0
    ]
    info: dict[str, Any] = {
        "configs_raced": n,
        "r0": r0 if epoch_bounded else None,
        "eta": eta,
        "rungs": plan,
        "runs": [r.summary() for r in records],
        "ensemble": members,
        "tta": key == "tta",
        "ensemble_val_auc": auc_note(val_auc),
        "ensemble_val_auc_plain": auc_note(chosen["plain"][2]),
        "ensemble_val_auc_tta": auc_note(chosen["tta"][2]),
        "plain_wins_share": round(plain_wins, 3),
        "calibration": {
            "temperature": round(calibration.temperature, 4),
            "bias": [round(b, 4) for b in calibration.bias],
            "val_log_loss_before": round(val_loss, 4),
            "val_log_loss_after": round(log_loss(kind, y_val, val), 4),
        },
        "deadline_cut": deadline_cut,
        # Whether the time kept for the result stopped the ensemble selection (its weights are
        # then those of the steps and bags it finished).
        "selection_cut": selection_cut,
        "epoch_bounded": epoch_bounded,
        "runs_file": runs_file,
        "folds": folds if pooled else 0,
        # The images the ensemble and the calibration were chosen by: val, or train and val.
        "selection_images": len(y_val),
        "mirror": all(c.mirror for c in raced),
        "mirror_auc": None if handedness is None else round(handedness, 3),
    }
    if killed:
        info["killed"] = killed + "; the search stopped there, the ensemble is of what finished"
    if deadline_cut:
        info["deadline_note"] = (
            "the deadline cut the search: the runs listed incomplete stopped early, later rungs"
            " did not start; the ensemble is of what finished"
        )
    log.info("ensemble of %d runs, val AUC %.4f (%s)", len(members), val_auc, key)
    return Predictions(val=_clip(val[val_rows]), test=_clip(test), train=None, info=info)


#: Seconds before the hard limit that the fallback run stops at, at most (:func:`fallback_stop`).
FALLBACK_RESERVE_S = 10.0


def fallback_stop(deadline: float, now: float) -> float:
    """When the fallback run (no run of the plan finished) stops training: ``FALLBACK_RESERVE_S``
    before the hard limit, or a quarter of the time left before it where that is less. A fixed
    10 s left a hard limit of 18 s (the quick budgets at ``--scale-factor 0.1``) none: with 12 s
    left after the probe, the run got 2 s, less than a fresh training process takes to reach its
    first step, and the task failed with no prediction where 9 s would have given one."""
    return deadline - min(FALLBACK_RESERVE_S, 0.25 * max(0.0, deadline - now))


def cross_fitted(parts: list[RunRecord], fold_of: Any, y: np.ndarray, task_type: str) -> RunRecord:
    """One run made of its folds' runs: validation scores out of fold for every image of train
    and val (in that order), test scores the folds' mean. A run with a fold that did not
    predict has no scores (it is left out of the ensemble)."""
    from decathlon.metrics import auc

    first = parts[0]
    record = RunRecord(first.config, first.rung, first.seed, first.epochs, first.allotted_s)
    record.epochs_run = min(p.epochs_run for p in parts)
    record.seconds = sum(p.seconds for p in parts)
    record.complete = all(p.complete for p in parts)
    if not all(p.snapshots for p in parts):
        return record
    record.snapshots = min(p.snapshots for p in parts)
    for key in first.val:
        oof = np.zeros((len(fold_of), first.val[key].shape[1]))
        for part in parts:
            oof[fold_of == part.fold] = part.val[key]
        record.val[key] = oof
        record.test[key] = np.mean([p.test[key] for p in parts], axis=0)
    record.val_auc = _safe_auc(auc, task_type, y, record.val["plain"])
    return record


def weighted(weights: np.ndarray, scores: list[np.ndarray]) -> np.ndarray:
    """The ensemble's scores: the weighted sum over the runs of weight > 0 only (a run that
    diverged has non-finite scores and weight 0, and 0 x NaN would still be NaN)."""
    return np.asarray(sum(w * s for w, s in zip(weights, scores) if w > 0), dtype=np.float64)


def keep_runs(
    path: Any,
    task_type: str,
    records: list[RunRecord],
    weights: np.ndarray,
    key: str,
    calibration: Calibration,
    val_rows: np.ndarray,
) -> None:
    """Write every run's scores (``val_plain``, ``val_tta``, ``test_plain``, ``test_tta``:
    runs x images x outputs, float32), which run is which (``config``, ``rung``, ``seed``), and
    how the result was made of them: ``weights``, ``tta``, ``task_type`` and the calibration's
    ``temperature`` and ``bias``. The result's scores are ``Calibration(task_type, temperature,
    bias)(weighted(weights, scores))``, to float32 precision, and of validation's scores the
    rows ``val_rows`` (cross-fitting: the val scores are out-of-fold scores of train, then
    val)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n_outputs = records[0].val[key].shape[1]
    arrays: dict[str, Any] = {
        f"{split}_{k}": np.stack([getattr(r, split)[k] for r in records]).astype(np.float32)
        for split in ("val", "test")
        for k in ("plain", "tta")
    }
    arrays.update(
        config=np.array([r.config for r in records]),
        rung=np.array([r.rung for r in records]),
        seed=np.array([r.seed for r in records]),
        weights=np.asarray(weights, dtype=np.float64),
        tta=np.array(key == "tta"),
        task_type=np.array(task_type),
        temperature=np.array(calibration.temperature),
        bias=np.asarray(calibration.bias or (0.0,) * n_outputs, dtype=np.float64),
        val_rows=np.asarray(val_rows, dtype=np.int64),
    )
    np.savez_compressed(path, **arrays)


def _clip(scores: Any) -> np.ndarray:
    return np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
