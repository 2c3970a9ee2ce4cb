"""Training: runtime setup, optimizer, fit, evaluation. Knows Keras; not MLflow, not Optuna.

`train(cfg, splits, callbacks)` returns a `TrainResult` (model, per-epoch history, test
metrics); tracking and pruning come in as Keras callbacks from the layers above, which also
fill in the result's `run_id`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np

from cifar_exp.config import AdamConfig, Config, SGDConfig, TrainerConfig
from cifar_exp.data import NUM_CLASSES, Splits, make_dataset
from cifar_exp.models import build_model

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class Evaluation:
    """A model on a labelled set (the test set): plain cross-entropy, accuracy, per-class
    accuracy and the confusion matrix (rows: true, columns: predicted). `run_id` and `model`
    say where it was recorded and which model it measured, once it is; `cached` marks one read
    back from that record rather than computed."""

    loss: float
    accuracy: float
    per_class_accuracy: list[float]
    confusion_matrix: list[list[int]]
    run_id: str | None = None
    model: str | None = None
    cached: bool = False

    def metrics(self) -> dict[str, Any]:
        """The measured values alone (what test_metrics.json holds)."""
        out = asdict(self)
        for key in ("run_id", "model", "cached"):
            out.pop(key)
        return out


@dataclass
class TrainResult:
    """What one training produced: per-epoch history, test metrics, how it ran, and the MLflow
    run that records it (`run_id`, None when untracked). `model` is the trained Keras model, or
    None once the result has crossed a process boundary (a study's trial process)."""

    history: dict[str, list[float]]
    test: Evaluation | None
    precision: str
    params: int
    train_time: float  # seconds in `fit`
    epochs_run: int
    data: dict[str, Any] = field(default_factory=dict)  # the data source and split sizes
    model: Any = None
    run_id: str | None = None

    @property
    def final(self) -> dict[str, float]:
        """The last epoch's value of each history metric."""
        return {k: v[-1] for k, v in self.history.items() if v}


# --------------------------------------------------------------------------- runtime


def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((ln for ln in fh if ln.startswith("flags")), "")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    """`auto` -> mixed_bfloat16 on bf16-capable CPUs and GPUs (compute >= 8.0), else float32."""
    if precision != "auto":
        return precision
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        return "mixed_bfloat16" if cc >= (8, 0) else "float32"
    return "mixed_bfloat16" if _cpu_has_bf16() else "float32"


def configure_runtime(trainer: TrainerConfig) -> str:
    """Seeds, threads, determinism and precision policy; returns the precision in force."""
    import tensorflow as tf

    if trainer.threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(trainer.threads)
        except RuntimeError:  # TF already started in this process: keep its setting
            log.warning("trainer.threads ignored: TensorFlow was already initialised")
    if trainer.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(trainer.seed)
    precision = resolve_precision(str(getattr(trainer.precision, "value", trainer.precision)))
    keras.mixed_precision.set_global_policy(precision)
    return precision


def build_optimizer(cfg: SGDConfig | AdamConfig, total_steps: int = 0) -> Any:
    """SGD or Adam with the configured schedule: the legacy `decay` becomes
    lr / (1 + decay * step) as in Keras 2; `onecycle` warms up linearly from 0 to `lr` over the
    first `warmup` fraction of `total_steps`, then anneals to 0 on a cosine."""
    lr: Any = cfg.lr
    if cfg.schedule == "onecycle":
        if total_steps < 1:
            raise ValueError("optimizer.schedule=onecycle needs the number of training steps")
        warmup = round(cfg.warmup * total_steps)
        lr = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=total_steps - warmup, warmup_target=cfg.lr, warmup_steps=warmup
        )
    elif cfg.decay:
        lr = keras.optimizers.schedules.InverseTimeDecay(
            cfg.lr, decay_steps=1, decay_rate=cfg.decay
        )
    wd = cfg.weight_decay or None
    if cfg.name == "sgd":
        return keras.optimizers.SGD(
            learning_rate=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=wd
        )
    if cfg.name == "adam":
        return keras.optimizers.Adam(
            learning_rate=lr,
            beta_1=cfg.beta_1,
            beta_2=cfg.beta_2,
            epsilon=cfg.epsilon,
            weight_decay=wd,
        )
    raise ValueError(f"optimizer.name: unknown optimizer {cfg.name!r}")


def current_lr(optimizer: Any) -> float:
    """The learning rate the optimizer applies at its current step (schedules evaluated)."""
    lr = optimizer.learning_rate
    return float(lr(optimizer.iterations) if callable(lr) else lr)


# --------------------------------------------------------------------------- callbacks


class EpochRecorder(keras.callbacks.Callback):
    """Adds `lr` and `epoch_time` (s) to each epoch's logs, keeps the history, stops on NaN.

    It must come first among the callbacks so that the others see the added keys.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        logs["epoch_time"] = time.perf_counter() - self._start
        logs["lr"] = current_lr(self.model.optimizer)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            raise TrainingDiverged(f"loss became {float(loss)} in epoch {epoch + 1}")


class EpochHook(keras.callbacks.Callback):
    """Calls `decide(epoch, logs)` at each epoch's end (epochs count from 1) and stops the
    training when it returns True: how a study's pruning reaches a training, wherever the
    training runs."""

    def __init__(self, decide: Callable[[int, dict[str, float]], bool]) -> None:
        super().__init__()
        self.decide = decide

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.decide(epoch + 1, {k: float(v) for k, v in (logs or {}).items()}):
            self.model.stop_training = True


class Lookahead(keras.callbacks.Callback):
    """Weight averaging as airbench does it: from epoch `start_epoch` on, every `every` steps
    the weights (batch-norm statistics included) move to an exponential moving average of
    themselves, whose decay grows as (step / total)**power, and they are set to the average
    after the last step of every epoch, so validation sees it. Fast early, strongly averaged at
    the end."""

    def __init__(
        self,
        total_steps: int,
        start_epoch: int = 3,
        every: int = 5,
        base: float = 0.95,
        power: float = 3.0,
    ) -> None:
        super().__init__()
        self.total_steps, self.start_epoch, self.every = total_steps, start_epoch, every
        self.base, self.power = base, power
        self._step, self._epoch, self._average = 0, 0, None

    def _weights(self) -> list[Any]:
        return [v for v in self.model.weights if "float" in str(v.dtype)]

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._step += 1
        if self._epoch >= self.start_epoch and self._step % self.every == 0:
            if self._average is None:
                # a copy: a Keras variable made from another's value shares its storage
                self._average = [
                    keras.Variable(keras.ops.copy(v.value), trainable=False)
                    for v in self._weights()
                ]
            else:
                rho = self.base**self.every * (self._step / self.total_steps) ** self.power
                for avg, v in zip(self._average, self._weights(), strict=True):
                    avg.assign(avg.value + (1 - rho) * (v.value - avg.value))
        # every update above ends here too: the weights become the average
        last_of_epoch = batch + 1 == self.params.get("steps")
        if self._average is not None and (last_of_epoch or self._step % self.every == 0):
            for avg, v in zip(self._average, self._weights(), strict=True):
                v.assign(avg.value)


# --------------------------------------------------------------------------- train / evaluate


def _verbose(setting: str) -> int:
    if setting == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(setting)


def _jit(setting: str) -> bool | str:
    return {"true": True, "false": False}.get(setting, "auto")


def compile_model(cfg: Config, steps_per_epoch: int = 0, images: Any = None) -> Any:
    """The configured model, compiled with its optimizer, cross-entropy and accuracy;
    `images` (the training images) for models that initialise from data.

    With label smoothing the labels come one-hot (see `make_dataset`) and the loss is the
    categorical one; otherwise the reference's sparse cross-entropy on integer labels.
    """
    model = build_model(cfg.model, images=images)
    t = cfg.trainer
    if t.label_smoothing:
        loss: Any = keras.losses.CategoricalCrossentropy(label_smoothing=t.label_smoothing)
        metric: Any = keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        loss, metric = "sparse_categorical_crossentropy", "accuracy"
    model.compile(
        optimizer=build_optimizer(cfg.optimizer, steps_per_epoch * t.epochs),
        loss=loss,
        metrics=[metric],
        jit_compile=_jit(t.jit_compile),
    )
    return model


def train(
    cfg: Config,
    splits: Splits,
    callbacks: list | tuple = (),
    *,
    evaluate_test: bool = True,
    verbose: str | None = None,
) -> TrainResult:
    """Train the configured model on `splits`; evaluate on the test set if asked."""
    keras.backend.clear_session()  # flat memory across trials in one process
    precision = configure_runtime(cfg.trainer)
    t = cfg.trainer
    steps_per_epoch = math.ceil(len(splits.y_train) / t.batch_size)
    model = compile_model(cfg, steps_per_epoch, images=splits.x_train)
    one_hot = bool(t.label_smoothing)
    train_ds = make_dataset(
        splits.x_train,
        splits.y_train,
        t.batch_size,
        shuffle=True,
        seed=t.seed,
        shuffle_buffer=cfg.data.shuffle_buffer,
        augment=t.augment,
        translate=t.translate,
        one_hot=one_hot,
    )
    val_ds = make_dataset(
        splits.x_val, splits.y_val, t.batch_size, shuffle=False, seed=t.seed, one_hot=one_hot
    )
    recorder = EpochRecorder()
    if t.lookahead:
        callbacks = [*callbacks, Lookahead(total_steps=steps_per_epoch * t.epochs)]
    start = time.perf_counter()
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=t.stop_after or t.epochs,  # a pruned trial re-run stops where it was pruned
        shuffle=False,  # tf.data shuffles
        callbacks=[recorder, *callbacks],
        verbose=_verbose(verbose or t.verbose),
    )
    train_time = time.perf_counter() - start
    test = evaluate(model, splits.x_test, splits.y_test, t.batch_size) if evaluate_test else None
    return TrainResult(
        history=recorder.history,
        test=test,
        precision=precision,
        params=int(model.count_params()),
        train_time=train_time,
        epochs_run=len(recorder.history.get("loss", [])),
        data=splits.info,
        model=model,
    )


def evaluate(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> Evaluation:
    """Loss, accuracy, per-class accuracy and confusion matrix (rows: true, cols: predicted)."""
    ds = make_dataset(x, y, batch_size, shuffle=False, seed=0)
    probs = np.asarray(model.predict(ds, verbose=0), dtype=np.float64)
    pred = probs.argmax(axis=1)
    eps = 1e-7  # Keras's clipping in sparse_categorical_crossentropy
    loss = float(-np.log(np.clip(probs[np.arange(len(y)), y], eps, 1 - eps)).mean())
    cm = np.bincount(y * NUM_CLASSES + pred, minlength=NUM_CLASSES**2).reshape(
        NUM_CLASSES, NUM_CLASSES
    )
    support = cm.sum(axis=1)
    per_class = np.divide(np.diag(cm), support, out=np.full(NUM_CLASSES, np.nan), where=support > 0)
    return Evaluation(
        loss=loss,
        accuracy=float((pred == y).mean()),
        per_class_accuracy=per_class.tolist(),
        confusion_matrix=cm.tolist(),
    )
