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
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np

from cifar_exp import interrupts

# the callbacks are part of train's API
from cifar_exp.callbacks import PLAIN_LOSS, EpochCounter, EpochRecorder, FreezeAfter, Lookahead
from cifar_exp.callbacks import EpochHook as EpochHook
from cifar_exp.callbacks import TrainingDiverged as TrainingDiverged
from cifar_exp.config import Config, TrainerConfig
from cifar_exp.data import NUM_CLASSES, Splits, alternating_flips, make_dataset
from cifar_exp.models import PREDICT_BATCH, build_model, predict, with_shift_tta
from cifar_exp.optimizers import build_optimizer

log = logging.getLogger(__name__)


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

    @property
    def n(self) -> int:
        return int(sum(sum(row) for row in self.confusion_matrix))

    def accuracy_interval(self) -> tuple[float, float]:
        """Wilson's 95 % interval of the accuracy on these n images."""
        from cifar_exp.stats import accuracy_interval

        right = sum(self.confusion_matrix[i][i] for i in range(len(self.confusion_matrix)))
        return accuracy_interval(right, self.n)

    def per_class_intervals(self) -> list[tuple[float, float] | None]:
        """Wilson's 95 % interval of each class's accuracy (None for a class with no image)."""
        from cifar_exp.stats import accuracy_interval

        rows = self.confusion_matrix
        return [
            accuracy_interval(row[i], sum(row)) if sum(row) else None for i, row in enumerate(rows)
        ]

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
    seed: int | None = None  # trainer.seed: one result is one seed's

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
    categorical one; otherwise the reference's sparse cross-entropy on integer labels. Where
    the training objective is not plain cross-entropy (label smoothing, weight penalties), the
    plain cross-entropy is measured too (`xent`), so that every loss reported is the same
    quantity (see `EpochRecorder`).
    """
    model = build_model(cfg.model, images=images)
    t = cfg.trainer
    metrics: list[Any]
    if t.label_smoothing:
        loss: Any = keras.losses.CategoricalCrossentropy(label_smoothing=t.label_smoothing)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
        metrics.append(keras.metrics.CategoricalCrossentropy(name=PLAIN_LOSS))
    else:
        loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
        if model.losses:  # weight penalties are added to the loss Keras reports
            metrics.append(keras.metrics.SparseCategoricalCrossentropy(name=PLAIN_LOSS))
    model.compile(
        optimizer=build_optimizer(cfg.optimizer, steps_per_epoch * t.epochs),
        loss=loss,
        metrics=metrics,
        jit_compile=_jit(t.jit_compile),
        steps_per_execution=steps_per_execution(t),
    )
    return model


def steps_per_execution(t: TrainerConfig) -> int:
    """`trainer.steps_per_execution`, except with Lookahead: it averages the weights between
    single steps, so it must hear of every step."""
    return 1 if t.lookahead else int(t.steps_per_execution)


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
    x_train, epoch_var = splits.x_train, None
    if t.augment and t.alternate_flips:
        x_train, epoch_var = alternating_flips(x_train, t.seed)
        callbacks = [EpochCounter(epoch_var), *callbacks]
    train_ds = make_dataset(
        x_train,
        splits.y_train,
        t.batch_size,
        shuffle=True,
        seed=t.seed,
        shuffle_buffer=cfg.data.shuffle_buffer,
        augment=t.augment,
        translate=t.translate,
        one_hot=one_hot,
        epoch=epoch_var,
        threads=t.input_threads,
    )
    val_ds = make_dataset(
        splits.x_val,
        splits.y_val,
        t.batch_size,
        shuffle=False,
        seed=t.seed,
        one_hot=one_hot,
        threads=t.input_threads,
    )
    recorder = EpochRecorder()
    if t.lookahead:
        callbacks = [*callbacks, Lookahead(total_steps=steps_per_epoch * t.epochs)]
    if getattr(cfg.model, "whiten_bias_epochs", None) is not None:  # after Lookahead's update
        bias = next(v for v in model.weights if v.path.endswith("whiten_bias/bias"))
        callbacks = [*callbacks, FreezeAfter(bias, cfg.model.whiten_bias_epochs)]
    epochs = t.stop_after or t.epochs  # a pruned trial re-run stops where it was pruned
    final = None
    on_test = splits.x_val is splits.x_test and splits.y_val is splits.y_test
    # with shifted views the test evaluation is not the per-epoch validation: it runs after
    if evaluate_test and on_test and not getattr(cfg.model, "tta_shift", 0):
        # validating on the test set: the last epoch's validation is the test evaluation
        final = TestAsValidation(splits.x_test, splits.y_test, t, epochs)
        callbacks = [final, recorder, *callbacks]
    else:
        callbacks = [recorder, *callbacks]
    start = time.perf_counter()
    model.fit(
        train_ds,
        validation_data=val_ds,
        # Keras validates every epoch but the one `final` validates
        validation_freq=list(range(1, epochs)) if final else 1,
        epochs=epochs,
        shuffle=False,  # tf.data shuffles
        callbacks=callbacks,
        verbose=_verbose(verbose or t.verbose),
    )
    train_time = time.perf_counter() - start
    interrupts.checkpoint()  # swallowed in the last epoch's callbacks: no test pass, no logging
    model = with_shift_tta(cfg.model, model)
    test = final.evaluation if final else None
    if evaluate_test and test is None:  # not on the test set, or stopped before the last epoch
        test = evaluate(model, splits.x_test, splits.y_test, t.batch_size, t.input_threads)
    return TrainResult(
        history=recorder.history,
        test=test,
        precision=precision,
        params=int(model.count_params()),
        train_time=train_time,
        epochs_run=len(recorder.history.get("loss", [])),
        data=splits.info,
        model=model,
        seed=int(t.seed),
    )


def predict_probs(
    model: Any, x: np.ndarray, batch_size: int = 256, threads: int | None = None
) -> np.ndarray:
    """Class probabilities (N, 10) for uint8 images, scaled as in training, in batches of at
    least PREDICT_BATCH (`threads`: the pipeline's, see `make_dataset`)."""
    batch = max(batch_size, PREDICT_BATCH)
    ds = make_dataset(x, np.zeros(len(x), np.int64), batch, shuffle=False, seed=0, threads=threads)
    return predict(model, ds)


def predict_classes(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return predict_probs(model, x, batch_size).argmax(axis=1)


def evaluate(
    model: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 256, threads: int | None = None
) -> Evaluation:
    """Loss, accuracy, per-class accuracy and confusion matrix (rows: true, cols: predicted)."""
    return _evaluation(predict_probs(model, x, batch_size, threads), y)


def _evaluation(probs: np.ndarray, y: np.ndarray) -> Evaluation:
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


class TestAsValidation(keras.callbacks.Callback):
    """The last epoch's validation when the validation set is the test set: one prediction
    pass gives both Keras's `val_` metrics and the test `Evaluation` (confusion matrix
    included), so the test set is not evaluated a second time after training (Keras validates
    the other epochs: `validation_freq`). First among the callbacks: the others read its
    `val_` metrics. `evaluation` stays None if the training stopped before `last_epoch`."""

    def __init__(self, x: np.ndarray, y: np.ndarray, t: TrainerConfig, last_epoch: int) -> None:
        super().__init__()
        self.x, self.y, self.t, self.last_epoch = x, y, t, last_epoch
        self.evaluation: Evaluation | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 != self.last_epoch or logs is None:
            return
        start = time.perf_counter()
        probs = predict_probs(self.model, self.x, self.t.batch_size, self.t.input_threads)
        self.evaluation = _evaluation(probs, self.y)
        # the names Keras would give them (see compile_model); EpochRecorder maps them as usual
        val = {"val_accuracy": self.evaluation.accuracy, "val_loss": self.evaluation.loss}
        if PLAIN_LOSS in logs:  # the objective differs from plain cross-entropy
            val.update(
                {f"val_{PLAIN_LOSS}": self.evaluation.loss, "val_loss": self._objective(probs)}
            )
        val["val_time"] = time.perf_counter() - start
        logs.update(val)

    def _objective(self, probs: np.ndarray) -> float:
        """The compiled loss on the test set, weight penalties included, as Keras reports it."""
        loss = self.model.loss
        fn = keras.losses.get(loss) if isinstance(loss, str) else loss
        one_hot = isinstance(fn, keras.losses.CategoricalCrossentropy)
        target = np.eye(NUM_CLASSES, dtype=np.float32)[self.y] if one_hot else self.y
        value = float(np.mean(keras.ops.convert_to_numpy(fn(target, probs.astype(np.float32)))))
        return value + sum(float(keras.ops.convert_to_numpy(p)) for p in self.model.losses)
