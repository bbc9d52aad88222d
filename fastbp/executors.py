"""Executors: how a model's training and evaluation steps run on its backend.

``Sequential`` decides *what* to compute (the Keras surface: data checks, callbacks, epochs,
validation); an executor runs it. There are three, chosen in one place (:func:`choose`) from
what the backend provides:

- :class:`LayerByLayer`: each layer's kernels called from Python, one batch at a time: the
  reference path every backend has (``backend="numpy"``, ``"numba"``).
- :class:`Compiled`: whole steps and epochs inside the backend's compiled loop (``Plan``,
  ``train_step``, ``train_epoch(s)``: ``backend="cython"``) where the model fits it, else layer
  by layer.
- :class:`OnDevice`: everything on the device (``backend="cuda"``): batches gathered there,
  losses and counts summed there, fused MLP kernels where the model fits them.

Every executor gives the same numbers as layer by layer (bit for bit where the arithmetic is the
same: tests/test_compiled_loop.py).
"""

from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import scipy.sparse as sp

from .backends.contract import COMPILED_LOOP, LINEAR
from .base_layer import head, rows
from .layers import BatchNormalization, Dense, Dropout
from .recurrent import GRU, LSTM, SimpleRNN

try:
    from ._ckernels import fisher_yates as _fisher_yates
except ImportError:  # no compiled module: the same swaps in Python
    _fisher_yates = None

#: most shuffle draws (float64) per compiled call of several epochs (Compiled.fit_epochs)
DRAWS_PER_CALL = 1 << 20

#: the compiled plan's name of each recurrent layer type
CELLS = {SimpleRNN: "rnn", LSTM: "lstm", GRU: "gru"}


def shuffled_order(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random permutation of range(n) (int64): Fisher-Yates over n uniform draws of ``rng``.

    Generator.permutation draws a bounded integer per element (33 µs for digits' 1437 rows,
    ~4% of a compiled epoch); one vector of draws and compiled swaps take ~6 µs.
    """
    u = rng.random(n)
    if _fisher_yates is not None:
        return _fisher_yates(u)
    order = np.arange(n, dtype=np.int64)
    for i in range(n - 1, 0, -1):
        j = min(int(u[i] * (i + 1)), i)
        order[i], order[j] = order[j], order[i]
    return order


def choose(model) -> LayerByLayer:
    """The executor for ``model``'s backend: the one place the training path is chosen."""
    be = model.backend
    if getattr(be, "device", False):
        return OnDevice(model)
    if all(hasattr(be, k) for k in COMPILED_LOOP):
        return Compiled(model)
    return LayerByLayer(model)


class LayerByLayer:
    """Each layer's kernels called from Python (the reference path).

    Parameters
    ----------
    model : Sequential
        A built, compiled model; the executor reads its layers, store, optimizer and loss.
    """

    # stop an epoch at a step whose loss is NaN or infinite (set by fit: TerminateOnNaN)
    stop_nonfinite = False

    def __init__(self, model):
        self.model = model
        self.backend = model.backend  # the backend this executor was chosen for

    # -- one step --------------------------------------------------------------------------------
    def forward(self, X, training: bool = False):
        """Outputs of the last layer for a batch ``X`` (m, ...) (a view of its workspace)."""
        m = self.model
        be = m.backend
        step = m.optimizer.iterations if m.optimizer is not None else 0
        for i, layer in enumerate(m.layers):
            m.inputs[i] = X
            X = layer.forward(be, X, training, step)
        return X

    def backward(self, m: int) -> None:
        """Backward through every layer from the last one's ``dA[:m]`` (written by the loss)."""
        model = self.model
        layers = model.layers
        for i in range(len(layers) - 1, -1, -1):
            dX = head(layers[i - 1].dA, m) if i > 0 else None  # no dX for the first layer
            act = LINEAR if (model.fused_loss and i == len(layers) - 1) else None
            layers[i].backward(model.backend, model.inputs[i], dX, act)

    # Sequence outputs (batch, T, k) are scored as batch·T rows, the mean over all of them (Keras).
    def loss_kernel(self, P, Y, dP) -> float:
        """The batch's mean loss; writes ∂L/∂P (∂L/∂Z where fused) into ``dP``."""
        m = self.model
        if m.sparse_loss:
            return m.backend.loss_sparse(rows(P), Y.reshape(Y.size), rows(dP), m.fused_loss)
        return m.backend.loss(m.loss_id, rows(P), rows(Y), rows(dP), m.fused_loss)

    def count_correct(self, P, Y) -> int:
        m = self.model
        if m.sparse_loss:
            return m.backend.count_correct_sparse(rows(P), Y.reshape(Y.size))
        return m.backend.count_correct(rows(P), rows(Y))

    def backprop(self, X, Y, count: bool) -> tuple[float, int]:
        """Forward, loss, backward: fills the flat gradient buffer (without regularization);
        returns the batch's mean loss and its correct rows (0 unless ``count``)."""
        P = self.forward(X, training=True)
        m = X.shape[0]
        loss = self.loss_kernel(P, Y, head(self.model.layers[-1].dA, m))
        correct = self.count_correct(P, Y) if count else 0
        self.backward(m)
        return loss, correct

    def regularization_loss(self) -> float:
        """Σ l1·|W| + l2·W² over every regularized variable (frozen ones too, as Keras)."""
        model = self.model
        store = model.store
        store.refresh_segments()
        return model.backend.regularization_loss(store.bound[0], store.reg_seg, store.reg_coef)

    def train_step(self, X, Y, count: bool) -> tuple[float, int]:
        """One step layer by layer: backprop, then ONE fused optimizer update."""
        m = self.model
        loss, correct = self.backprop(X, Y, count)
        store = m.store
        if m.penalty_per_row:  # (the compiled plan divides the coefficients the same way)
            store.refresh_segments()
            penalty = m.backend.regularization_loss(
                store.bound[0], store.reg_seg, store.reg_coef / X.shape[0]
            )
            seg_reg = store.seg_reg / X.shape[0]
        else:
            penalty, seg_reg = self.regularization_loss(), store.seg_reg
        loss += penalty  # at the weights the gradient was taken at
        m.optimizer.step(m.backend, *store.bound, store.seg, seg_reg)
        return loss, correct

    def train_on_batch(self, X, Y) -> float:
        return self.train_step(X, Y, False)[0]

    # -- epochs ----------------------------------------------------------------------------------
    def fit_epochs(self, X, Y, val, epochs, bs, shuffle, count, per_batch, cbs) -> None:
        """``epochs`` epochs, each its own call, with the callbacks and the validation pass
        between them; stops where a callback asks."""
        for epoch in range(epochs):
            self.one_epoch(epoch, X, Y, val, bs, shuffle, count, per_batch, cbs)
            if self.model.stop_training:
                break

    def epoch_order(self, n: int, shuffle: bool):
        """The next epoch's row order (None: the stored order)."""
        model = self.model
        if not shuffle:
            return None
        if model.shuffle_orders is not None:
            return model.shuffle_orders(n)
        return shuffled_order(model.shuffle_rng, n)

    def one_epoch(self, epoch, X, Y, val, bs, shuffle, count, per_batch, cbs) -> None:
        """Epoch number ``epoch`` with its callbacks and validation pass."""
        model = self.model
        n = X.shape[0]
        for c in cbs:
            c.on_epoch_begin(epoch)
        total, correct = self.epoch(X, Y, self.epoch_order(n, shuffle), bs, count, per_batch)
        logs = model.epoch_logs(total / n, correct / (n * model.out_rows))
        if val is not None:
            vloss, vacc = self.evaluate(*val, bs)
            logs.update({"val_" + k: v for k, v in model.epoch_logs(vloss, vacc).items()})
            model.ensure_capacity(bs, X.shape[1:])  # back to the training shape
        for c in cbs:
            c.on_epoch_end(epoch, logs)

    def epoch(self, X, Y, order, bs, count, per_batch) -> tuple[float, int]:
        """One epoch; returns (Σ loss·rows, correct rows)."""
        model = self.model
        n = X.shape[0]
        if order is not None:
            Xb = np.empty((bs,) + X.shape[1:], dtype=X.dtype)
            Yb = np.empty((bs,) + Y.shape[1:], dtype=Y.dtype)
        total, correct = 0.0, 0
        for step, a in enumerate(range(0, n, bs)):
            b = min(a + bs, n)
            if order is not None:
                xb = np.take(X, order[a:b], axis=0, out=Xb[: b - a])
                yb = np.take(Y, order[a:b], axis=0, out=Yb[: b - a])
            else:
                xb, yb = X[a:b], Y[a:b]
            loss, right = self.train_step(xb, yb, count)
            total += loss * (b - a)
            correct += right
            if self.stop_nonfinite and not math.isfinite(loss):
                break
            if per_batch:
                logs = model.epoch_logs(total / b, correct / (b * model.out_rows))
                for c in per_batch:
                    c.on_train_batch_end(step, logs)
        return total, correct

    # -- inference -------------------------------------------------------------------------------
    def evaluate(self, X, Y, bs) -> tuple[float, float]:
        """(mean loss + regularization, accuracy) over ``X`` in chunks of ``bs`` rows."""
        model = self.model
        n = X.shape[0]
        model.ensure_capacity(bs, X.shape[1:])
        total, correct = 0.0, 0
        for a in range(0, n, bs):
            xb, yb = X[a : a + bs], Y[a : a + bs]
            P = self.forward(xb)
            total += self.loss_kernel(P, yb, model.layers[-1].dA[: xb.shape[0]]) * xb.shape[0]
            correct += self.count_correct(P, yb) if model.metrics else 0
        return total / n + self.regularization_loss(), correct / (n * model.out_rows)

    def predict_chunk(self, X) -> np.ndarray:
        """Outputs for one chunk of rows, as a host array."""
        return self.forward(X)

    def predict(self, X, bs, out) -> None:
        """Outputs for ``X`` into ``out`` (n, ...) in chunks of ``bs`` samples."""
        for a in range(0, X.shape[0], bs):
            out[a : a + bs] = self.predict_chunk(X[a : a + bs])

    def plan(self):
        """The backend's compiled plan for the model (Compiled only; None here)."""
        return None


def _compiled_ready(model) -> bool:
    """Can ``model`` run compiled (plans, fused kernels) now? Compiled with its optimizer state
    (predict before compile runs layer by layer), 2-D or sequence inputs, use_compiled_loop;
    the store's segments brought up to date where it can."""
    if (
        not model.use_compiled_loop
        or model.optimizer is None
        or model.optimizer.state is None
        or len(model.ws_shape or ()) not in (1, 2)
    ):
        return False
    model.store.refresh_segments()
    return True


def _csr(X) -> tuple:
    """A CSR matrix's (indptr, indices, data) as the compiled loop takes them (int64 indices:
    a slice of a checked matrix comes back with int32 ones)."""
    return X.indptr.astype(np.int64, copy=False), X.indices.astype(np.int64, copy=False), X.data


def _flat(a: np.ndarray) -> np.ndarray:
    """A workspace (capacity, [steps,] width) as the plan takes it: (capacity, steps·width)."""
    return a.reshape(a.shape[0], -1)


class Compiled(LayerByLayer):
    """Whole steps and epochs, and the inference passes of predict and evaluate, in the
    backend's compiled loop, where the model fits it (see :meth:`layer_specs`), with
    ``model.use_compiled_loop``. Anything else runs layer by layer."""

    @staticmethod
    def layer_specs(layers) -> tuple[list, list, list, list, tuple | None] | None:
        """The compiled plan's view of ``layers``: per Dense or recurrent layer its arrays,
        and those of the BatchNormalization and the Dropout after it, and its recurrent cell
        (each None where absent), and those on the inputs (None where there are none); None
        where the plan cannot run them (a layer type it lacks, not in [BN] [Dropout] layer
        [BN] [Dropout] ... order)."""
        main, norms, drops, cells = [], [], [], []
        pre_norm, pre_drop, dX = None, None, None
        for la in layers:
            if not main and type(la) in (BatchNormalization, Dropout):  # on the inputs
                if type(la) is BatchNormalization:
                    if pre_norm is not None or pre_drop is not None:
                        return None
                    pre_norm, dX = Compiled._norm_spec(la), _flat(la._dX)
                elif pre_drop is not None:
                    return None
                elif la.rate > 0:
                    pre_drop = (la.rate, la._seed, _flat(la.mask), _flat(la.A), _flat(la.dA))
                continue
            if type(la) is Dense:
                spec = (la.W, la.b, _flat(la.A), _flat(la.dA), la.dW, la.db, la.act, la.alpha)
                main.append(spec + (_flat(la.Z),) if la.keeps_z else spec)
                cells.append(None)
            elif type(la) in CELLS:
                # (SimpleRNN's activation; the gated cells fix theirs)
                act, alpha = getattr(la, "act", LINEAR), getattr(la, "alpha", 0.0)
                main.append((la.Wx, la.b, _flat(la.A), _flat(la.dA), la.dWx, la.db, act, alpha))
                flat = tuple(la._flat[name][0] for name, _, _ in la._WORKSPACES)
                cells.append(
                    (CELLS[type(la)], la.Wh, la.dWh, la.return_sequences, la.bptt_steps or 0, flat)
                )
            elif type(la) is BatchNormalization and main and norms[-1] is None:
                if drops[-1] is not None:
                    return None
                norms[-1] = Compiled._norm_spec(la)
                continue
            elif type(la) is Dropout and main and drops[-1] is None:
                if la.rate > 0:  # rate 0 is the identity, in both directions
                    drops[-1] = (la.rate, la._seed, _flat(la.mask), _flat(la.A), _flat(la.dA))
                continue
            else:
                return None
            norms.append(None)
            drops.append(None)
        pre = None if pre_norm is None and pre_drop is None else (pre_norm, pre_drop, dX)
        return (main, norms, drops, cells, pre) if main else None

    @staticmethod
    def _norm_spec(la) -> tuple:
        """A BatchNormalization layer as the plan takes it."""
        return (la.epsilon, la.momentum, la.trainable, la.gamma, la.beta, la.moving_mean,
                la.moving_variance, la.mean, la.inv_std, _flat(la.Xhat), _flat(la.A),
                _flat(la.dA), la.dgamma, la.dbeta)  # fmt: skip

    def __init__(self, model):
        super().__init__(model)
        self._key = None
        self._plan = None
        self._post = []  # the plan's (BatchNormalization or Dropout layer, its _setting)

    @staticmethod
    def _setting(la):
        """What a plan copies of a Dropout's or BatchNormalization's attributes."""
        return la.rate if type(la) is Dropout else (la.epsilon, la.momentum)

    def plan(self, sparse: bool = False):
        """The backend's Plan for this model (for CSR inputs where ``sparse``), or None where it
        does not fit; cached, and the layers read only when the buffers changed (a new layer
        makes a new executor)."""
        model = self.model
        if not _compiled_ready(model):
            return None
        opt, store = model.optimizer, model.store
        key = (
            store.segments_key,
            id(store.seg),
            id(store.reg_seg),
            model.capacity,
            model.ws_shape,
            id(opt),
            id(opt.state),
            id(store.params),
            model.loss,
            model.penalty_per_row,
            sparse,
        )
        if self._key != key or any(self._setting(la) != s for la, s in self._post):
            # (a changed dropout rate or batchnorm setting makes a new plan too)
            specs = self.layer_specs(model.layers)
            if specs is None:
                self._key, self._plan = key, None
                return None
            layers, norms, drops, cells, pre = specs
            plan = model.backend.Plan(
                layers,
                store.params,
                store.grads,
                opt.state,
                opt._hyper,
                store.seg,
                store.seg_reg,
                store.reg_seg,
                store.reg_coef,
                opt.kind,
                model.loss_id,
                model.fused_loss,
                drops if any(d is not None for d in drops) else None,
                norms if any(b is not None for b in norms) else None,
                cells if any(c is not None for c in cells) else None,
                model.ws_shape[0] if len(model.ws_shape) == 2 else 1,
                pre,
                model.penalty_per_row,
                sparse,
            )
            post = [la for la in model.layers if type(la) in (Dropout, BatchNormalization)]
            self._key, self._plan = key, plan
            self._post = [(la, self._setting(la)) for la in post]
        return self._plan

    def plan_targets(self, Y):
        """(Y, labels) as the plan takes them: (n, outputs per sample) or labels (n·steps,)."""
        if self.model.sparse_loss:
            return None, Y.reshape(Y.size)
        return Y.reshape(Y.shape[0], -1), None

    @staticmethod
    def plan_inputs(X):
        """X (n, [steps,] features) as the plan takes it: (n, steps·features)."""
        return X if X.ndim == 2 else X.reshape(X.shape[0], -1)

    def train_on_batch(self, X, Y) -> float:
        if sp.issparse(X):
            return float(self._sparse_epochs(X, Y, None, 1, X.shape[0], False, False, [])[0])
        plan = self.plan()
        if plan is None:
            return super().train_on_batch(X, Y)
        opt = self.model.optimizer
        with self.stopping(plan):
            loss = self.model.backend.train_step(
                plan, self.plan_inputs(X), *self.plan_targets(Y), opt.iterations
            )
        opt.iterations += 1
        return loss

    @contextlib.contextmanager
    def stopping(self, plan, finished=None):
        """Around a compiled training call: where a signal handler raised inside it (Ctrl-C:
        the loop stopped at the end of a step), the step counter is set to that step's and the
        finished epochs' ``(totals, corrects)`` go to ``finished`` before the exception
        propagates; the weights and optimizer state are already the last finished step's."""
        plan.stop_nonfinite = self.stop_nonfinite
        try:
            yield
        except BaseException:
            state, plan.interrupted = plan.interrupted, None
            if state is not None:
                totals, corrects, t = state
                self.model.optimizer.iterations = int(t)
                if finished is not None and len(totals):
                    finished(totals, corrects)
            raise

    def evaluate(self, X, Y, bs) -> tuple[float, float]:
        model = self.model
        model.ensure_capacity(bs, X.shape[1:])
        if sp.issparse(X):  # the outputs compiled, then one loss call over all of them
            P = np.empty((X.shape[0],) + model.sample_shapes(X.shape[1:])[-1], model.dtype)
            self.predict(X, bs, P)
            total = self.loss_kernel(P, Y, np.empty_like(P))
            correct = self.count_correct(P, Y) if model.metrics else 0
            return total + self.regularization_loss(), correct / (X.shape[0] * model.out_rows)
        plan = self.plan()
        if plan is None:
            return super().evaluate(X, Y, bs)
        n = X.shape[0]
        total, correct = model.backend.infer(
            plan, self.plan_inputs(X), *self.plan_targets(Y), None, bs, bool(model.metrics)
        )
        return total / n + self.regularization_loss(), correct / (n * model.out_rows)

    def predict(self, X, bs, out) -> None:
        if sp.issparse(X):
            plan = self._sparse_plan()
            self.model.backend.infer_sparse(plan, *_csr(X), out.reshape(out.shape[0], -1), bs)
            return None
        plan = self.plan()
        if plan is None:
            return super().predict(X, bs, out)
        self.model.backend.infer(
            plan, self.plan_inputs(X), None, None, out.reshape(out.shape[0], -1), bs, False
        )

    def _compiled_plan(self, per_batch):
        """The plan where the batch callbacks allow compiled epochs (all of them show progress
        only: ``batch_period``), else None."""
        return self.plan() if all(c.batch_period for c in per_batch) else None

    def fit_epochs(self, X, Y, val, epochs, bs, shuffle, count, per_batch, cbs) -> None:
        # whole epochs in compiled code unless a callback runs after every batch; as far as the
        # callbacks allow (History: any number), runs of them in one call
        if sp.issparse(X):  # (batch callbacks see the epochs' ends only)
            self._sparse_epochs(X, Y, val, epochs, bs, shuffle, count, cbs)
            return
        plan = self._compiled_plan(per_batch)
        if plan is not None and not per_batch and val is None:
            self._runs_of_epochs(plan, X, Y, epochs, bs, shuffle, count, cbs)
        else:
            super().fit_epochs(X, Y, val, epochs, bs, shuffle, count, per_batch, cbs)

    def epoch(self, X, Y, order, bs, count, per_batch) -> tuple[float, int]:
        plan = self._compiled_plan(per_batch)
        if plan is None:
            return super().epoch(X, Y, order, bs, count, per_batch)
        if per_batch:
            return self._epoch_in_chunks(plan, X, Y, order, bs, count, per_batch)
        opt = self.model.optimizer
        with self.stopping(plan):
            total, correct, t = self.model.backend.train_epoch(
                plan, self.plan_inputs(X), *self.plan_targets(Y), order, bs, opt.iterations, count
            )
        opt.iterations = int(t)
        return total, correct

    def _epoch_in_chunks(self, plan, X, Y, order, bs, count, per_batch) -> tuple[float, int]:
        """One epoch as compiled calls of whole batches, each about ``batch_period`` seconds
        long (the first one batch, to time it), the batch callbacks after each: the same
        batches in the same order as one call, so the same numbers."""
        model = self.model
        be, opt, n = model.backend, model.optimizer, X.shape[0]
        period = min(c.batch_period for c in per_batch)
        total, correct, a, k, done = 0.0, 0, 0, 1, 0
        while a < n:
            b = min(n, a + k * bs)
            if order is None:
                xc, yc = X[a:b], Y[a:b]
            else:  # the chunk's rows gathered here: its batches then run in the stored order
                xc, yc = np.take(X, order[a:b], axis=0), np.take(Y, order[a:b], axis=0)
            start = time.perf_counter()
            xc, yc = self.plan_inputs(xc), self.plan_targets(yc)
            with self.stopping(plan):
                part, right, t = be.train_epoch(plan, xc, *yc, None, bs, opt.iterations, count)
            took = time.perf_counter() - start
            opt.iterations = int(t)
            total, correct, done = total + part, correct + right, done + -(-(b - a) // bs)
            logs = model.epoch_logs(total / b, correct / (b * model.out_rows))
            for c in per_batch:
                c.on_train_batch_end(done - 1, logs)
            if plan.nonfinite:  # (TerminateOnNaN: the epoch ends at that step)
                break
            k = max(1, int(period / max(took / -(-(b - a) // bs), 1e-9)))
            a = b
        return total, correct

    def _sparse_plan(self):
        plan = self.plan(sparse=True)
        if plan is None:
            raise ValueError(
                "sparse inputs need a model the compiled loop takes (a first Dense layer, "
                "without layers before it, use_compiled_loop); pass x.toarray() otherwise"
            )
        return plan

    def _sparse_epochs(self, X, Y, val, epochs, bs, shuffle, count, cbs) -> np.ndarray:
        """Epochs over CSR inputs ``X``, in runs as far as the callbacks allow (one by one with
        validation data); returns the last run's Σ loss·rows per epoch."""
        model, be = self.model, self.model.backend
        plan, n, opt = self._sparse_plan(), X.shape[0], model.optimizer
        Yf, epoch, totals, parts = self.plan_targets(Y), 0, np.zeros(0), _csr(X)
        while epoch < epochs and not model.stop_training:
            ahead = min((c.epochs_ahead() for c in cbs), default=epochs)
            k = 1 if val is not None else max(1, min(epochs - epoch, ahead))
            if k == 1 or ahead < 1:  # hooks around the epoch, as one_epoch calls them
                k = 1
                for c in cbs:
                    c.on_epoch_begin(epoch)
            orders = np.stack([self.epoch_order(n, True) for _ in range(k)]) if shuffle else None
            done = self._epochs_done(epoch, n, cbs, k > 1, val, bs, X.shape[1:])
            with self.stopping(plan, done):
                totals, corrects, t = be.train_epochs_sparse(
                    plan, *parts, *Yf, orders, k, bs, opt.iterations, count
                )
            opt.iterations = int(t)
            done(totals, corrects)
            epoch += len(totals)
        return totals / n

    def _epochs_done(self, first, n, cbs, begin, val=None, bs=None, shape=None):
        """A function of one call's ``(totals, corrects)`` per epoch: the epoch-end callbacks
        (and their epoch-begin ones where ``begin``) of epochs first, first + 1, ..., with the
        validation pass after each where ``val``."""
        model = self.model

        def done(totals, corrects):
            for i, (total, correct) in enumerate(
                zip(totals.tolist(), corrects.tolist(), strict=True)
            ):
                logs = model.epoch_logs(total / n, correct / (n * model.out_rows))
                if val is not None:
                    vloss, vacc = self.evaluate(*val, bs)
                    logs |= {"val_" + key: v for key, v in model.epoch_logs(vloss, vacc).items()}
                    model.ensure_capacity(bs, shape)
                for c in cbs if begin else ():
                    c.on_epoch_begin(first + i)
                for c in cbs:
                    c.on_epoch_end(first + i, logs)

        return done

    def _runs_of_epochs(self, plan, X, Y, epochs, bs, shuffle, count, cbs) -> None:
        """``epochs`` epochs as ``epoch`` runs them one by one (the same shuffles: the
        Generator's draws for several epochs at once are the same numbers; ``shuffle_orders``
        called once per epoch in order), several per call as far as every callback allows
        (``Callback.epochs_ahead``; none: one epoch the usual way), up to DRAWS_PER_CALL draws
        (8 MB) a call."""
        model = self.model
        n = X.shape[0]
        opt = model.optimizer
        per_call, epoch = max(1, DRAWS_PER_CALL // n), 0
        Xf, Yf = self.plan_inputs(X), self.plan_targets(Y)
        while epoch < epochs and not model.stop_training:
            k = min(per_call, epochs - epoch, *(c.epochs_ahead() for c in cbs))
            if k < 1:
                self.one_epoch(epoch, X, Y, None, bs, shuffle, count, [], cbs)
                epoch += 1
                continue
            draws = orders = None
            if shuffle and model.shuffle_orders is not None:
                orders = np.stack([model.shuffle_orders(n) for _ in range(k)])
            elif shuffle:
                draws = model.shuffle_rng.random((k, n))
            done = self._epochs_done(epoch, n, cbs, True)
            with self.stopping(plan, done):
                totals, corrects, t = model.backend.train_epochs(
                    plan, Xf, *Yf, draws, k, bs, opt.iterations, count, orders
                )
            opt.iterations = int(t)
            done(totals, corrects)
            epoch += len(totals)


class OnDevice(LayerByLayer):
    """Everything on the device: parameters, optimizer state and workspaces stay there for the
    whole ``fit``; batches are gathered there and the loss and correct rows summed there, read
    back once per epoch (per batch only for batch callbacks)."""

    def __init__(self, model):
        super().__init__(model)
        self._fused_key = None
        self._fused_plan = None
        self._batch_ws = None

    def fused_mlp(self):
        """The backend's fully fused MLP kernels for this model (cached), or None."""
        model = self.model
        if not _compiled_ready(model):
            return None
        key = (model.capacity, model.ws_shape, id(model.store.bound[0]))
        key += tuple(map(id, model.layers))
        key += tuple((la.trainable, getattr(la, "act", None)) for la in model.layers)
        if self._fused_key != key:
            params, grads = model.store.bound
            self._fused_plan = model.backend.fused_mlp(
                model.layers, params, grads, model.capacity, model.dtype
            )
            self._fused_key = key
        return self._fused_plan

    def forward(self, X, training: bool = False):
        self.model.push()
        fused = self.fused_mlp()
        if fused is not None:  # one launch for all layers
            self.model.inputs[0] = X
            return fused.forward(X, X.shape[0])
        return super().forward(X, training)

    def backward(self, m: int) -> None:
        fused = self.fused_mlp()
        if fused is not None:  # one launch for all layers
            fused.backward(self.model.inputs[0], m, LINEAR if self.model.fused_loss else None)
            return
        super().backward(m)

    def _device_loss(self, P, Y, acc) -> float:
        """Add Σ of the batch's losses to acc[0] without a round trip; returns the factor that
        turns acc[0] into Σ mean-loss·rows (the fit's accumulation)."""
        model = self.model
        be, dP = model.backend, head(model.layers[-1].dA, P.shape[0])
        if model.sparse_loss:
            div = be.loss_sparse_into(rows(P), Y.reshape(Y.size), rows(dP), model.fused_loss, acc)
        else:
            div = be.loss_into(model.loss_id, rows(P), rows(Y), rows(dP), model.fused_loss, acc)
        return div / P.shape[0]

    def _count(self, P, Y, acc) -> None:
        model = self.model
        if model.sparse_loss:
            model.backend.count_into(rows(P), None, Y.reshape(Y.size), acc)
        else:
            model.backend.count_into(rows(P), rows(Y), None, acc)

    def epoch(self, X, Y, order, bs, count, per_batch) -> tuple[float, int]:
        model = self.model
        be, n, store = model.backend, X.shape[0], model.store
        if order is not None:
            idx = be.as_device(order)
            if self._batch_ws is None or self._batch_ws[0].shape[0] < bs:
                self._batch_ws = (
                    be.empty((bs,) + tuple(X.shape[1:]), X.dtype),
                    be.empty((bs,) + tuple(Y.shape[1:]), Y.dtype),
                )
            Xb, Yb = self._batch_ws
        acc, reg = be.accumulator(), be.accumulator()
        per_row = 1.0
        for step, a in enumerate(range(0, n, bs)):
            b = min(a + bs, n)
            model.push()  # a batch callback may have pulled the weights (get_weights)
            if order is not None:
                be.take_rows(X, idx[a:b], Xb, b - a)
                be.take_rows(Y, idx[a:b], Yb, b - a)
                xb, yb = head(Xb, b - a), head(Yb, b - a)
            else:
                xb, yb = X[a:b], Y[a:b]
            P = self.forward(xb, training=True)
            per_row = self._device_loss(P, yb, acc)
            if count:
                self._count(P, yb, acc)
            self.backward(b - a)
            # regularization at the weights the gradient was taken at, weighted by the rows
            be.regularization_loss_into(store.bound[0], store.reg_seg, store.reg_coef, reg, b - a)
            model.optimizer.step(be, *store.bound, store.seg, store.seg_reg)
            if per_batch:
                sums = be.to_host(acc)
                logs = model.epoch_logs(
                    sums[0] / per_row / b + be.to_host(reg)[0] / b,
                    sums[1] / (b * model.out_rows),
                )
                for c in per_batch:
                    c.on_train_batch_end(step, logs)
        sums = be.to_host(acc)
        return float(sums[0] / per_row + be.to_host(reg)[0]), int(sums[1])

    def evaluate(self, X, Y, bs) -> tuple[float, float]:
        model = self.model
        be, n, store = model.backend, X.shape[0], model.store
        model.ensure_capacity(bs, X.shape[1:])
        X, Y = be.as_device(X), be.as_device(Y)
        store.refresh_segments()
        acc, reg = be.accumulator(), be.accumulator()
        per_row = 1.0
        for a in range(0, n, bs):
            P = self.forward(X[a : a + bs])
            per_row = self._device_loss(P, Y[a : a + bs], acc)
            if model.metrics:
                self._count(P, Y[a : a + bs], acc)
        be.regularization_loss_into(store.bound[0], store.reg_seg, store.reg_coef, reg, 1.0)
        sums = be.to_host(acc)
        loss = float(sums[0] / per_row / n + be.to_host(reg)[0])
        return loss, float(sums[1] / (n * model.out_rows))

    def predict_chunk(self, X) -> np.ndarray:
        return self.model.backend.to_host(self.forward(X))
