"""Training callbacks with Keras names and semantics."""

import math
import sys
import time
import warnings

import numpy as np


class Callback:
    """Base class: override the hooks you need. ``self.model`` is set before training."""

    model = None
    params: dict = {}  # {"epochs", "steps", "verbose"} of the fit (Keras' Callback.params)
    # True: the callback only reads the epoch logs and never changes the model (History), so
    # fit may run several epochs in one compiled call and call its epoch hooks afterwards
    replayable = False
    # Seconds: the batch hook only shows progress, so fit may run batches in compiled chunks of
    # about this long and call on_train_batch_end after each (the chunk's last batch and logs).
    # None: the hook runs after every batch (and the epoch layer by layer).
    batch_period: float | None = None
    # True: training stops at the first step whose loss is NaN or infinite (the compiled loops
    # check each step's loss and, at each epoch's end, the weights; the epoch's logs then
    # carry that loss)
    stops_on_nonfinite = False

    def epochs_ahead(self) -> int:
        """How many of the coming epochs fit may run (in one compiled call) before calling this
        callback's epoch hooks for them, in order: any number where ``replayable``, else 0
        (each epoch's hooks before the next epoch starts). A callback that may stop training
        says how many epochs it certainly will not stop in."""
        return sys.maxsize if self.replayable else 0

    @property
    def wants_batches(self) -> bool:
        """Whether fit calls on_train_batch_end (a subclass that defines it, by default)."""
        return type(self).on_train_batch_end is not Callback.on_train_batch_end

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = params

    def on_train_begin(self, logs=None): ...

    def on_train_end(self, logs=None): ...

    def on_epoch_begin(self, epoch, logs=None): ...

    def on_epoch_end(self, epoch, logs=None): ...

    def on_train_batch_end(self, batch, logs=None): ...


class History(Callback):
    """Records the logs of every epoch: ``history[name]`` is a list, one value per epoch."""

    replayable = True

    def on_train_begin(self, logs=None):
        self.epoch: list[int] = []
        self.history: dict[str, list[float]] = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Parameters
    ----------
    monitor : str
        A key of the epoch logs, e.g. "val_loss" or "accuracy".
    min_delta : float
        Smallest change that counts as an improvement.
    patience : int
        Epochs without improvement before stopping.
    mode : {"auto", "min", "max"}
        "auto" maximizes names containing "acc", minimizes the rest.
    restore_best_weights : bool
        When stopping, put back the weights of the best epoch.
    """

    def __init__(
        self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto", restore_best_weights=False
    ):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if int(patience) != patience or patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {patience!r}")
        self.monitor, self.patience = monitor, int(patience)
        self.min_delta = abs(float(min_delta))
        self.restore_best_weights = restore_best_weights
        maximize = mode == "max" or (mode == "auto" and "acc" in monitor)
        self._sign = -1.0 if maximize else 1.0  # compare sign·value: lower is better
        self.stopped_epoch = 0

    def on_train_begin(self, logs=None):
        self.wait, self.best, self.best_epoch, self.best_weights = 0, math.inf, 0, None
        self.stopped_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor not in (logs or {}):
            raise KeyError(
                f"EarlyStopping monitors {self.monitor!r}, which is not in the logs "
                f"{sorted(logs or {})} (val_* needs validation_data or validation_split)"
            )
        value = self._sign * logs[self.monitor]
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.restore_best_weights and self.best_weights is not None:
                self.model.set_weights(self.best_weights)


class LearningRateScheduler(Callback):
    """Set the learning rate at each epoch start to ``schedule(epoch, lr)``."""

    def __init__(self, schedule):
        self.schedule = schedule

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        opt.learning_rate = float(self.schedule(epoch, opt.learning_rate))


def finite_model(model) -> bool:
    """Whether every weight of ``model`` (moving statistics included) is finite."""
    return all(np.isfinite(w).all() for w in model.get_weights())


class TerminateOnNaN(Callback):
    """Stop training at the first batch whose loss is NaN or infinite (Keras'), or at the end
    of an epoch that leaves a weight so.

    The compiled loops check each step's loss and the weights after each epoch themselves, so
    no Python runs per batch: the epoch stops after its bad step, and its logs carry that loss.
    """

    stops_on_nonfinite = True

    def epochs_ahead(self) -> int:
        return sys.maxsize  # the compiled loop itself ends a call at the bad step

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss", 0.0)
        if not math.isfinite(loss):
            print(f"Epoch {epoch + 1}: Invalid loss, terminating training")
        elif not finite_model(self.model):
            print(f"Epoch {epoch + 1}: Invalid weights (NaN or inf), terminating training")
        else:
            return
        self.model.stop_training = True


class ModelCheckpoint(Callback):
    """Save the model to ``filepath`` after each epoch (or only when ``monitor`` improves).

    A model with a NaN or infinite weight or loss is never saved (a warning says so): it
    would replace the last good checkpoint.
    """

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto"):
        self.filepath, self.monitor, self.save_best_only = str(filepath), monitor, save_best_only
        maximize = mode == "max" or (mode == "auto" and "acc" in monitor)
        self._sign = -1.0 if maximize else 1.0
        self.best = math.inf

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not math.isfinite(logs.get("loss", 0.0)) or not finite_model(self.model):
            warnings.warn(
                f"Epoch {epoch + 1}: the model has a NaN or infinite weight or loss; "
                f"not saved over {self.filepath!r}",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        if self.save_best_only:
            value = self._sign * logs.get(self.monitor, math.nan)
            if not value < self.best:
                return
            self.best = value
        self.model.save(self.filepath.format(epoch=epoch + 1, **logs))


class ProgressBar(Callback):
    """What ``verbose`` prints: a live bar on a terminal (1), else one line per epoch (1 or 2).

    The bar is redrawn at most 10 times a second, so compiled epochs run in chunks of batches
    between redraws (``batch_period``); one line per epoch needs no batch hook at all.
    """

    batch_period = 0.1

    def __init__(self, verbose=1, stream=None):
        self.stream = stream or sys.stdout
        self.live = verbose == 1 and getattr(self.stream, "isatty", lambda: False)()

    @property
    def wants_batches(self) -> bool:
        return self.live

    def on_train_begin(self, logs=None):
        self.epochs = self.params["epochs"]
        self.steps = self.params["steps"]

    def on_epoch_begin(self, epoch, logs=None):
        self.start = self.last = time.perf_counter()
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if not self.live or (now - self.last < 0.1 and batch + 1 < self.steps):
            return  # redraw at most 10 times a second
        self.last = now
        done = int(30 * (batch + 1) / self.steps)
        bar = "=" * done + "." * (30 - done)
        self.stream.write(f"\r{batch + 1}/{self.steps} [{bar}] {_fmt(logs)}")
        self.stream.flush()

    def on_epoch_end(self, epoch, logs=None):
        took = time.perf_counter() - self.start
        head = f"Epoch {epoch + 1}/{self.epochs}"
        if self.live:
            self.stream.write(
                f"\r{head} - {self.steps}/{self.steps} - {took:.2f}s - {_fmt(logs)}\n"
            )
        else:
            self.stream.write(f"{head} - {took:.2f}s - {_fmt(logs)}\n")
        self.stream.flush()


def _fmt(logs) -> str:
    return " - ".join(f"{k}: {v:.4f}" for k, v in (logs or {}).items() if np.isscalar(v))
