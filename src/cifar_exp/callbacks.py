"""Keras callbacks of a training: the epoch recorder (history, lr, epoch time, plain
cross-entropy, divergence), the hook through which a study's pruning reaches a training, and
airbench's pieces: Lookahead weight averaging, the epoch counter of its alternating flips and
the freezing of its whitening bias. Keras only."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import keras

from cifar_exp import interrupts


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def current_lr(optimizer: Any) -> float:
    """The learning rate the optimizer applies at its current step (schedules evaluated)."""
    lr = optimizer.learning_rate
    return float(lr(optimizer.iterations) if callable(lr) else lr)


PLAIN_LOSS = "xent"  # plain cross-entropy, measured where the objective differs from it


class EpochRecorder(keras.callbacks.Callback):
    """Adds `lr`, `epoch_time` (s) and `val_time` (s of it spent validating) to each epoch's
    logs, keeps the history, stops on NaN.

    Every loss it leaves in the logs is plain cross-entropy: where the training objective
    differs (label smoothing, weight penalties), `loss` / `val_loss` become the measured plain
    cross-entropy and the objective is kept as `objective` / `val_objective`.
    It must come first among the callbacks so that the others see these keys.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self._start = self._val_start = self._val = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        interrupts.checkpoint()  # one swallowed after the last epoch's end (a pruner's query)
        self._start, self._val = time.perf_counter(), 0.0

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._val_start = time.perf_counter()

    def on_test_end(self, logs: dict | None = None) -> None:
        self._val += time.perf_counter() - self._val_start

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        interrupts.checkpoint()  # a Ctrl-C swallowed in this epoch ends the training here
        logs = logs if logs is not None else {}
        for prefix in ("", "val_"):
            if f"{prefix}{PLAIN_LOSS}" in logs:
                logs[f"{prefix}objective"] = logs[f"{prefix}loss"]
                logs[f"{prefix}loss"] = logs.pop(f"{prefix}{PLAIN_LOSS}")
        logs["epoch_time"] = time.perf_counter() - self._start
        # Keras's validation, or the time a callback before this one (TestAsValidation) left
        logs["val_time"] = logs.get("val_time", 0.0) + self._val
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
    training runs. `on_batch(epoch, done, batches)`, if given, hears of the batches done in
    the epoch at most every `every_s` seconds (and at the epoch's last batch), so that a
    display moves within an epoch without flooding a pipe."""

    # the batch hook only reads a clock: Keras may keep dispatching batch ends off the
    # training thread (without it, any batch hook makes Keras wait for every step)
    async_safe = True

    def __init__(
        self,
        decide: Callable[[int, dict[str, float]], bool],
        on_batch: Callable[[int, int, int], None] | None = None,
        every_s: float = 0.25,
    ) -> None:
        super().__init__()
        self.decide, self.on_batch, self.every_s = decide, on_batch, every_s
        self._epoch, self._done, self._shown = 0, 0, 0.0
        self._lock = threading.Lock()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        with self._lock:
            self._epoch, self._done, self._shown = epoch + 1, 0, time.monotonic()
        if self.on_batch is not None:
            self.on_batch(epoch + 1, 0, int(self.params.get("steps") or 0))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.on_batch is None:
            return
        steps = int(self.params.get("steps") or 0)
        # with steps_per_execution > 1 Keras calls this once per group of batches, `batch`
        # the group's last index, counted past the epoch's end for a short last group
        done = min(batch + 1, steps) if steps else batch + 1
        with self._lock:  # async dispatch may deliver batch ends out of order
            now = time.monotonic()
            last = done == steps
            if done <= self._done or (now - self._shown < self.every_s and not last):
                return
            self._done, self._shown, epoch = done, now, self._epoch
        self.on_batch(epoch, done, steps)

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


class EpochCounter(keras.callbacks.Callback):
    """Sets `variable` to the epoch number as each epoch starts, for an input pipeline that
    depends on it (`data.alternating_flips`): Keras makes an epoch's iterator after this."""

    def __init__(self, variable: Any) -> None:
        super().__init__()
        self.variable = variable

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.variable.assign(epoch)


class FreezeAfter(keras.callbacks.Callback):
    """Trains `variable` for the first `epochs` epochs, then holds it at its value: restored
    after every later step (airbench trains its whitening bias for 3 epochs). Restoring keeps
    the compiled train step as it is; freezing by `trainable` would need a new one."""

    def __init__(self, variable: Any, epochs: int) -> None:
        super().__init__()
        self.variable, self.epochs = variable, epochs
        self._held: Any = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch >= self.epochs and self._held is None:
            self._held = keras.ops.copy(self.variable.value)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._held is not None:
            self.variable.assign(self._held)
