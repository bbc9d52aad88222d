# Whole training steps without Python in between: forward, loss, backward and the optimizer
# update of a model of Dense and recurrent layers (SimpleRNN, LSTM, GRU; Dense on sequences
# applies at every time step), each optionally followed by a BatchNormalization and a Dropout
# layer, for one batch (train_on_batch) or a whole epoch (fit); and the forward pass alone
# over many batches (predict, evaluate: infer).
#
# A Plan holds raw pointers to every buffer of the model, checked once when it is built; the
# loops then run nogil and call the same cdef kernels as the layer-by-layer path, in the same
# order, so both paths give bit-identical results. One exception to the order, not to the
# result: plain SGD updates each layer as its backward ends (backward_sgd), rounding as the
# flat-buffer update does (explicit FMAs in both).

cimport numpy as cnp
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
import numpy as np

cnp.import_array()


cdef inline void* _ptr(a):
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef int _need(a, str name, dtype, tuple shape, bint writable=False) except -1:
    """Refuse anything but a C-contiguous ndarray of this dtype and shape (checks in C: this
    runs on every train_on_batch)."""
    cdef cnp.ndarray arr
    cdef int d
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    arr = <cnp.ndarray>a
    if cnp.PyArray_TYPE(arr) != (<cnp.dtype>dtype).type_num:
        raise ValueError(f"{name} must have dtype {np.dtype(dtype)}, got {a.dtype}")
    if cnp.PyArray_NDIM(arr) != len(shape):
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    for d in range(len(shape)):
        if cnp.PyArray_DIM(arr, d) != <Py_ssize_t>shape[d]:
            raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr) or (writable and not cnp.PyArray_ISWRITEABLE(arr)):
        raise ValueError(f"{name} must be C-contiguous{' and writable' if writable else ''}")
    return 0


cdef object F32 = np.dtype(np.float32), F64 = np.dtype(np.float64), I64 = np.dtype(np.int64)

# a plan layer's kind: Dense, or one of the recurrent cells (their workspaces: RECURRENT)
cdef enum:
    PLAN_DENSE = 0
    PLAN_RNN = 1
    PLAN_LSTM = 2
    PLAN_GRU = 3

# per cell: (kind, gates, its workspaces in the order the layer's _WORKSPACES lists them, each
# as (name, columns: "F" features or a multiple of units, leading steps: "T", "T+1" or ""))
RECURRENT = {
    "rnn": (PLAN_RNN, 1, (("Xt", "F", "T"), ("H", 1, "T+1"), ("dG", 1, "T"))),
    "lstm": (PLAN_LSTM, 4, (("Xt", "F", "T"), ("H", 1, "T+1"), ("C", 1, "T+1"), ("G", 4, "T"),
                            ("dG", 4, "T"), ("dh", 1, ""), ("dc", 1, ""))),
    "gru": (PLAN_GRU, 3, (("Xt", "F", "T"), ("H", 1, "T+1"), ("G", 3, "T"), ("Rh", 1, "T"),
                          ("S", 3, ""), ("dG", 3, "T"), ("dGh", 3, "T"), ("dh", 1, ""))),
}
cdef int MAX_WS = 8


ctypedef struct PlanC:
    # the model's buffers and sizes, read by the compiled loops without the GIL (the team's
    # helper thread too: _team.h)
    int n_layers, itemsize, opt_kind, loss_kind
    bint fused
    Py_ssize_t capacity, n_inputs, n_outputs, nseg, nreg
    int* n_in
    int* n_out
    int* act
    double* alpha
    void** W
    void** b
    void** A
    void** dA
    void** dW
    void** db
    void* params
    void* grads
    void* s0
    void* s1
    double* hyper
    int64_t* seg
    double* seg_reg
    int64_t* reg_seg
    double* reg_coef
    # each layer's W and b segment (-1: frozen or absent); sgd_fusable: every segment is one of
    # them, so plain SGD can update layer by layer inside the backward pass (backward_sgd)
    Py_ssize_t* wseg
    Py_ssize_t* bseg
    bint sgd_fusable
    # the team's Wᵀ scratch for dX = dZ·Wᵀ (team_step): wt numbers (the largest n_in·n_out
    # above the first layer), allocated at the first team epoch, kept with the plan
    void* WT
    Py_ssize_t wt
    # a Dropout layer after Dense layer l (drop_rate[l] > 0): its mask, output Ad and the
    # gradient dAd the layer above writes (the Dropout layer's own workspaces); the layer above
    # reads Ad, and dA[l] = dAd ⊙ mask before layer l's backward. Models with either run
    # serially, without the fused SGD backward (backward_sgd)
    bint has_post  # a BatchNormalization or Dropout follows some layer, or a layer keeps Z
    # each layer's pre-activations (capacity, n_out), for activations whose derivative needs z
    # (NULL for the others)
    void** Z
    # a BatchNormalization layer after Dense layer l (bn[l]; before its Dropout if both):
    # per layer 12 pointers (gamma, beta, moving mean, moving variance, mean, inv_std, Xhat, A,
    # dA, dgamma, dbeta, unused) and its epsilon, momentum, and whether it uses batch
    # statistics (trainable) or the moving ones (frozen)
    bint* bn
    bint* bn_train
    double* bn_eps
    double* bn_mom
    void** bnp
    double* drop_rate
    uint64_t* drop_seed
    void** mask
    void** Ad
    void** dAd
    # per layer: its kind (PLAN_DENSE, PLAN_RNN, ...), the time steps per sample of its input
    # and its output (1: no time axis; a Dense layer on sequences runs on m·tin rows), and for
    # a recurrent layer its recurrent kernel, that kernel's gradient, return_sequences, its
    # truncation (bptt_steps, 0: none) and MAX_WS workspace pointers (RECURRENT's order); W, b,
    # dW, db are its kernel and bias, n_out its units
    int* kind
    Py_ssize_t* tin
    Py_ssize_t* tout
    void** Wh
    void** dWh
    bint* seq
    Py_ssize_t* bptt
    void** ws
    # numbers per sample: the targets' (tout of the last layer · n_outputs) and labels'
    Py_ssize_t y_width, label_width
    # a BatchNormalization and/or Dropout on the inputs (before layer 0): slot n_layers of
    # the per-layer arrays (n_out: features, tout: steps, A: the step's X, dA: the
    # BatchNormalization's unread dX)
    bint pre
    # penalty_per_row: seg_reg and reg_coef divided by the step's rows into these (each step)
    bint per_row
    double* seg_reg_m
    double* reg_coef_m
    # the first layer's inputs are CSR rows (sparse_forward0, sparse_backward0)
    bint sparse_in
    # signals during a call (_signals.pxi) and the steps it finished; stop_nonfinite: end the
    # call after a step whose loss is NaN or infinite, or an epoch that leaves a weight so
    # (TerminateOnNaN), nonfinite: it did
    Watch watch
    Py_ssize_t steps_run
    bint stop_nonfinite, nonfinite


cdef class Plan:
    """Pointers to all buffers of a model (Dense layers, their BatchNormalization and Dropout
    layers) and its optimizer, validated once.

    Parameters: layers, a list of (W, b|None, A, dA, dW, db|None, act, alpha[, Z]) per layer,
    A/dA (and Z, given exactly for activations whose derivative needs it) shaped (capacity, n_out); params, grads (p,); state (2, p); hyper (12,) float64; segments,
    seg_reg as optimizer_step takes them; reg_segments, reg_coef: every regularized variable
    (frozen ones too) for the loss value; opt_kind, loss_kind, fused; norms: None, or per layer
    None or (epsilon, momentum, training, gamma, beta, moving_mean, moving_var, mean, inv_std,
    Xhat, A, dA, dgamma, dbeta) of a BatchNormalization layer after it; dropouts: None, or per
    layer None or (rate, seed, mask, A, dA) of a Dropout layer after it (or after its
    BatchNormalization). The arrays are shaped as the layer's A, vectors (n_out,); neither
    follows the last layer.

    Sequences: ``steps`` is the input's time steps per sample (1: 2-D input); the inputs are
    then (batch, steps·features) and each layer's A, dA (and the arrays after it) (capacity,
    its output steps·n_out). cells: None, or per layer None (Dense: on sequences it runs at
    every step) or (cell, Wh, dWh, return_sequences, bptt, workspaces) of a recurrent layer,
    cell one of RECURRENT's names, workspaces its flat arrays in RECURRENT's order; its
    spec's W, dW are the kernel Wx (features, gates·units) and its gradient, b the bias
    ((gates·units,), GRU (2, 3·units)), act its activation (SimpleRNN; ignored by the others).
    penalty_per_row: each step's regularization (loss and gradient) divided by its rows
    (scikit-learn's convention). sparse_inputs: the inputs come as CSR matrices
    (train_epochs_sparse, infer_sparse): the first layer, a Dense one without Z, multiplies
    only their stored numbers. inputs: None, or (norm, dropout, dX) of a BatchNormalization
    and/or Dropout before the
    first layer (norm, dropout as above or None; dX: the BatchNormalization's scratch
    (capacity, steps·features) for the dX nobody reads).
    """

    cdef PlanC c
    cdef list keep  # the arrays behind the pointers stay alive as long as the plan
    # where a signal handler raised during a training call: (Σ loss·rows and correct rows of
    # each finished epoch, t after the last finished step); the caller reads and clears it
    cdef public object interrupted

    @property
    def stop_nonfinite(self):
        """End training calls at a step whose loss is NaN or infinite, or an epoch that leaves
        a weight so (TerminateOnNaN); ``nonfinite``: the last call did."""
        return self.c.stop_nonfinite

    @stop_nonfinite.setter
    def stop_nonfinite(self, bint on):
        self.c.stop_nonfinite = on

    @property
    def nonfinite(self):
        return self.c.nonfinite

    cdef int raise_pending(self, state) except -1:
        """After a loop: raise the exception a signal handler raised during it (_signals.pxi),
        ``state`` kept in ``interrupted``."""
        exc = watch_pending(&self.c.watch)
        if exc is not None:
            self.interrupted = state
            raise exc
        return 0

    def __cinit__(self, list layers, params, grads, state, hyper, segments, seg_reg,
                  reg_segments, reg_coef, int opt_kind, int loss_kind, bint fused,
                  dropouts=None, norms=None, cells=None, Py_ssize_t steps=1, inputs=None,
                  bint penalty_per_row=False, bint sparse_inputs=False):
        cdef int L = len(layers), l, i
        cdef Py_ssize_t n, T = steps
        if L == 0:
            raise ValueError("layers must hold at least one layer")
        dtype = params.dtype if isinstance(params, np.ndarray) else None
        if dtype != F32 and dtype != F64:
            raise ValueError(f"params must be a float32 or float64 array, got {dtype}")
        n = params.shape[0]
        _need(params, "params", dtype, (n,), True)
        _need(grads, "grads", dtype, (n,), True)
        _need(state, "state", dtype, (2, n), True)
        _need(hyper, "hyper", F64, (N_HYPER,))
        if not 0 <= opt_kind < FASTBP_N_OPTIMIZERS or not MSE <= loss_kind <= SPARSE_CE:
            raise ValueError(f"unknown optimizer {opt_kind} or loss {loss_kind}")
        for name, sg, rg in (("segments", segments, seg_reg),
                             ("reg_segments", reg_segments, reg_coef)):
            k = sg.shape[0] if isinstance(sg, np.ndarray) else -1
            _need(sg, name, I64, (k, 2))
            _need(rg, name + " coefficients", F64, (k, 2))
            if k and not ((sg[:, 0] >= 0) & (sg[:, 0] <= sg[:, 1]) & (sg[:, 1] <= n)).all():
                raise ValueError(f"{name} must lie within [0, {n}]")
        self.c.n_layers, self.c.itemsize = L, dtype.itemsize
        self.c.opt_kind, self.c.loss_kind, self.c.fused = opt_kind, loss_kind, fused
        self.keep = [params, grads, state, hyper, segments, seg_reg, reg_segments, reg_coef]
        self.c.n_in = <int*>PyMem_Calloc(L + 1, sizeof(int))
        self.c.n_out = <int*>PyMem_Calloc(L + 1, sizeof(int))
        self.c.act = <int*>PyMem_Calloc(L + 1, sizeof(int))
        self.c.alpha = <double*>PyMem_Calloc(L + 1, sizeof(double))
        self.c.W = <void**>PyMem_Calloc(L + 1, sizeof(void*))
        self.c.b = <void**>PyMem_Calloc(L + 1, sizeof(void*))
        self.c.A = <void**>PyMem_Calloc(L + 1, sizeof(void*))
        self.c.dA = <void**>PyMem_Calloc(L + 1, sizeof(void*))
        self.c.dW = <void**>PyMem_Calloc(L + 1, sizeof(void*))
        self.c.db = <void**>PyMem_Calloc(L + 1, sizeof(void*))
        self.c.wseg = <Py_ssize_t*>PyMem_Calloc(L + 1, sizeof(Py_ssize_t))
        self.c.bseg = <Py_ssize_t*>PyMem_Calloc(L + 1, sizeof(Py_ssize_t))
        self.c.drop_rate = <double*>PyMem_Calloc(L + 1, sizeof(double))
        self.c.drop_seed = <uint64_t*>PyMem_Calloc(L + 1, sizeof(uint64_t))
        self.c.mask = <void**>PyMem_Calloc(L + 1, sizeof(void*))
        self.c.Ad = <void**>PyMem_Calloc(L + 1, sizeof(void*))
        self.c.dAd = <void**>PyMem_Calloc(L + 1, sizeof(void*))
        self.c.Z = <void**>PyMem_Calloc(L + 1, sizeof(void*))
        if self.c.Z == NULL:
            raise MemoryError()
        self.c.kind = <int*>PyMem_Calloc(L + 1, sizeof(int))
        self.c.tin = <Py_ssize_t*>PyMem_Calloc(L + 1, sizeof(Py_ssize_t))
        self.c.tout = <Py_ssize_t*>PyMem_Calloc(L + 1, sizeof(Py_ssize_t))
        self.c.Wh = <void**>PyMem_Calloc(L + 1, sizeof(void*))
        self.c.dWh = <void**>PyMem_Calloc(L + 1, sizeof(void*))
        self.c.seq = <bint*>PyMem_Calloc(L + 1, sizeof(bint))
        self.c.bptt = <Py_ssize_t*>PyMem_Calloc(L + 1, sizeof(Py_ssize_t))
        self.c.ws = <void**>PyMem_Calloc(MAX_WS * (L + 1), sizeof(void*))
        if (self.c.kind == NULL or self.c.tin == NULL or self.c.tout == NULL or self.c.Wh == NULL
                or self.c.dWh == NULL or self.c.seq == NULL or self.c.bptt == NULL
                or self.c.ws == NULL):
            raise MemoryError()
        self.c.bn = <bint*>PyMem_Calloc(L + 1, sizeof(bint))
        self.c.bn_train = <bint*>PyMem_Calloc(L + 1, sizeof(bint))
        self.c.bn_eps = <double*>PyMem_Calloc(L + 1, sizeof(double))
        self.c.bn_mom = <double*>PyMem_Calloc(L + 1, sizeof(double))
        self.c.bnp = <void**>PyMem_Calloc(12 * (L + 1), sizeof(void*))
        if (self.c.bn == NULL or self.c.bn_train == NULL or self.c.bn_eps == NULL
                or self.c.bn_mom == NULL or self.c.bnp == NULL):
            raise MemoryError()
        if (self.c.n_in == NULL or self.c.n_out == NULL or self.c.act == NULL or self.c.alpha == NULL
                or self.c.W == NULL or self.c.b == NULL or self.c.A == NULL or self.c.dA == NULL
                or self.c.dW == NULL or self.c.db == NULL or self.c.wseg == NULL or self.c.bseg == NULL
                or self.c.drop_rate == NULL or self.c.drop_seed == NULL or self.c.mask == NULL
                or self.c.Ad == NULL or self.c.dAd == NULL):
            raise MemoryError()
        if dropouts is not None and (not isinstance(dropouts, list) or len(dropouts) != L):
            raise ValueError(f"dropouts must be None or a list of {L} entries")
        if norms is not None and (not isinstance(norms, list) or len(norms) != L):
            raise ValueError(f"norms must be None or a list of {L} entries")
        if cells is not None and (not isinstance(cells, list) or len(cells) != L):
            raise ValueError(f"cells must be None or a list of {L} entries")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        cap = layers[0][2].shape[0] if isinstance(layers[0][2], np.ndarray) else 0
        if cap < 1:
            raise ValueError("A of the first layer must be an array with at least one row")
        k_in = layers[0][0].shape[0] if isinstance(layers[0][0], np.ndarray) else 0
        for l, spec in enumerate(layers):
            if len(spec) not in (8, 9):
                raise ValueError(f"layer {l}: expected (W, b, A, dA, dW, db, act, alpha[, Z])")
            Wl, bl, Al, dAl, dWl, dbl, a, alpha = spec[:8]
            Zl = spec[8] if len(spec) == 9 else None
            cell = cells[l] if cells is not None else None
            self.c.tin[l] = T
            if cell is None:
                k_out = Wl.shape[1] if isinstance(Wl, np.ndarray) and Wl.ndim == 2 else 0
                wcols = k_out
                bshape = (k_out,)
            else:
                if not isinstance(cell, tuple) or len(cell) != 6 or cell[0] not in RECURRENT:
                    raise ValueError(f"layer {l}: cell must be (cell, Wh, dWh, "
                                     f"return_sequences, bptt, workspaces), cell one of "
                                     f"{sorted(RECURRENT)}")
                kind, gates, wspec = RECURRENT[cell[0]]
                Wh, dWh, rseq, bptt, wss = cell[1:]
                k_out = Wh.shape[0] if isinstance(Wh, np.ndarray) and Wh.ndim == 2 else 0
                wcols = gates * k_out
                bshape = (2, wcols) if kind == PLAN_GRU else (wcols,)
                if k_out < 1:
                    raise ValueError(f"layer {l}: Wh must be a 2-D array with non-zero sides")
                _need(Wh, f"layer {l} Wh", dtype, (k_out, wcols))
                _need(dWh, f"layer {l} dWh", dtype, (k_out, wcols), True)
                if Zl is not None:
                    raise ValueError(f"layer {l}: a recurrent layer keeps no Z")
                if kind == PLAN_RNN:
                    check_act(a, alpha)
                    if a == SOFTMAX:
                        raise ValueError(f"layer {l}: act must not be softmax in a recurrent layer")
                if not 0 <= bptt:
                    raise ValueError(f"layer {l}: bptt must be >= 0, got {bptt}")
                if not isinstance(wss, tuple) or len(wss) != len(wspec):
                    raise ValueError(f"layer {l}: {cell[0]} takes {len(wspec)} workspaces")
                for i, (name, width, lead) in enumerate(wspec):
                    cols = k_in if width == "F" else width * k_out
                    lead_n = {"T": T, "T+1": T + 1, "": 1}[lead]
                    _need(wss[i], f"layer {l} workspace {name}", dtype, (lead_n * cap * cols,),
                          True)
                    self.c.ws[MAX_WS * l + i] = _ptr(wss[i])
                self.c.kind[l], self.c.seq[l], self.c.bptt[l] = kind, rseq, bptt
                self.c.Wh[l], self.c.dWh[l] = _ptr(Wh), _ptr(dWh)
                self.c.has_post = True  # (the serial loop: see team_epoch_worth)
                self.keep += [Wh, dWh, wss]
                if not rseq:
                    T = 1
                blas_dim(self.c.tin[l] * cap * max(k_in, wcols), "timesteps·batch·width")
            self.c.tout[l] = T
            if T > 1:
                self.c.has_post = True
            if k_in < 1 or k_out < 1:
                raise ValueError(f"layer {l}: W must be a 2-D array with non-zero sides")
            _need(Wl, f"layer {l} W", dtype, (k_in, wcols))
            _need(dWl, f"layer {l} dW", dtype, (k_in, wcols), True)
            _need(Al, f"layer {l} A", dtype, (cap, T * k_out), True)
            _need(dAl, f"layer {l} dA", dtype, (cap, T * k_out), True)
            if (bl is None) != (dbl is None):
                raise ValueError(f"layer {l}: b and db must both be arrays or both None")
            if bl is not None:
                _need(bl, f"layer {l} b", dtype, bshape)
                _need(dbl, f"layer {l} db", dtype, bshape, True)
            if cell is None:
                check_act(a, alpha, Zl is not None)
                if fastbp_act_needs_z(a) != (Zl is not None):
                    raise ValueError(
                        f"layer {l}: Z must be given exactly for activations that need it")
            if Zl is not None:
                _need(Zl, f"layer {l} Z", dtype, (cap, T * k_out), True)
                self.c.Z[l] = _ptr(Zl)
                self.c.has_post = True
                self.keep.append(Zl)
            check_blas_dims(cap * T, k_in, k_out)
            self.c.n_in[l], self.c.n_out[l], self.c.act[l], self.c.alpha[l] = k_in, k_out, a, alpha
            self.c.W[l] = _ptr(Wl)
            self.c.A[l] = _ptr(Al)
            self.c.dA[l] = _ptr(dAl)
            self.c.dW[l] = _ptr(dWl)
            self.c.b[l] = _ptr(bl) if bl is not None else NULL
            self.c.db[l] = _ptr(dbl) if dbl is not None else NULL
            self.keep += [Wl, bl, Al, dAl, dWl, dbl]
            self._follow(l, norms[l] if norms is not None else None,
                         dropouts[l] if dropouts is not None else None, dtype, cap, T, k_out)
            k_in = k_out
        self.c.capacity, self.c.n_outputs = cap, k_in
        self.c.n_inputs = steps * layers[0][0].shape[0]
        if inputs is not None:  # BatchNormalization and/or Dropout on the inputs: slot L
            if not isinstance(inputs, tuple) or len(inputs) != 3:
                raise ValueError("inputs must be None or (norm, dropout, dX)")
            self.c.n_out[L], self.c.tout[L] = layers[0][0].shape[0], steps
            self._follow(L, inputs[0], inputs[1], dtype, cap, steps, self.c.n_out[L])
            self.c.pre = inputs[0] is not None or inputs[1] is not None
            if inputs[0] is not None and inputs[0][2]:  # batch statistics: dX scratch
                _need(inputs[2], "inputs dX", dtype, (cap, self.c.n_inputs), True)
                self.c.dA[L] = _ptr(inputs[2])
                self.keep.append(inputs[2])
        self.c.y_width, self.c.label_width = T * k_in, T
        self.c.params = _ptr(params)
        self.c.grads = _ptr(grads)
        self.c.s0 = _ptr(state)
        self.c.s1 = <char*>self.c.s0 + n * self.c.itemsize
        self.c.hyper = <double*>_ptr(hyper)
        self.c.nseg, self.c.nreg = segments.shape[0], reg_segments.shape[0]
        self.c.seg = <int64_t*>_ptr(segments)
        self.c.seg_reg = <double*>_ptr(seg_reg)
        self.c.reg_seg = <int64_t*>_ptr(reg_segments)
        self.c.reg_coef = <double*>_ptr(reg_coef)
        self.c.per_row = penalty_per_row
        if sparse_inputs:
            if self.c.kind[0] != PLAN_DENSE or steps != 1 or self.c.Z[0] != NULL or self.c.pre:
                raise ValueError("sparse inputs need a first Dense layer on 2-D inputs, without "
                                 "layers before it or an activation that keeps Z")
            self.c.sparse_in, self.c.has_post = True, True  # (serial loop)
        self.c.seg_reg_m = <double*>PyMem_Calloc(2 * self.c.nseg + 1, sizeof(double))
        self.c.reg_coef_m = <double*>PyMem_Calloc(2 * self.c.nreg + 1, sizeof(double))
        if self.c.seg_reg_m == NULL or self.c.reg_coef_m == NULL:
            raise MemoryError()
        claimed = 0
        for l in range(L):
            self.c.wseg[l] = self._segment_of(self.c.W[l], self.c.n_in[l] * self.c.n_out[l])
            self.c.bseg[l] = self._segment_of(self.c.b[l], self.c.n_out[l])
            claimed += (self.c.wseg[l] >= 0) + (self.c.bseg[l] >= 0)
        self.c.sgd_fusable = claimed == self.c.nseg
        self.c.WT, self.c.wt = NULL, 1
        for l in range(1, L):
            self.c.wt = max(self.c.wt, <Py_ssize_t>self.c.n_in[l] * self.c.n_out[l])

    cdef int _follow(self, int l, norm, drop, dtype, Py_ssize_t cap, Py_ssize_t T,
                     Py_ssize_t k) except -1:
        """Check and take the BatchNormalization (norm) and Dropout (drop) after layer l
        (l = n_layers: on the inputs), each None or as the class docstring gives them, on rows
        of k numbers, T per sample."""
        cdef int i
        if norm is not None:
            eps, mom, training = norm[0], norm[1], norm[2]
            if not eps > 0 or not 0 <= mom <= 1:
                raise ValueError(f"layer {l}: epsilon must be > 0 and momentum in [0, 1]")
            for i, arr in enumerate(norm[3:]):
                if i < 6 or i > 8:
                    _need(arr, f"layer {l} batchnorm vector {i}", dtype, (k,), True)
                else:
                    _need(arr, f"layer {l} batchnorm array {i}", dtype, (cap, T * k), True)
                self.c.bnp[12 * l + i] = _ptr(arr)
            self.c.bn[l], self.c.bn_train[l] = True, training
            self.c.bn_eps[l], self.c.bn_mom[l] = eps, mom
            self.c.has_post = True
            self.keep += list(norm[3:])
        if drop is not None:
            rate, seed, Ml, Adl, dAdl = drop
            if not 0 < rate < 1 or not 0 <= seed < 2**64:
                raise ValueError(f"layer {l}: dropout rate must be in (0, 1) and seed in "
                                 f"[0, 2**64), got {rate}, {seed}")
            for name, arr in (("mask", Ml), ("A", Adl), ("dA", dAdl)):
                _need(arr, f"layer {l} dropout {name}", dtype, (cap, T * k), True)
            self.c.drop_rate[l], self.c.drop_seed[l] = rate, seed
            self.c.mask[l], self.c.Ad[l], self.c.dAd[l] = _ptr(Ml), _ptr(Adl), _ptr(dAdl)
            self.c.has_post = True
            self.keep += [Ml, Adl, dAdl]
        return 0

    # what Python reads of the plan
    @property
    def n_layers(self):
        return self.c.n_layers

    @property
    def capacity(self):
        return self.c.capacity

    @property
    def n_inputs(self):
        return self.c.n_inputs

    @property
    def n_outputs(self):
        return self.c.n_outputs

    @property
    def sgd_fusable(self):
        return self.c.sgd_fusable

    cdef Py_ssize_t _segment_of(self, void* data, Py_ssize_t size):
        """Index of the segment [start, start + size) that holds the array at data, or -1."""
        cdef Py_ssize_t s, start
        if data == NULL or <char*>data < <char*>self.c.params:
            return -1
        start = (<char*>data - <char*>self.c.params) // self.c.itemsize
        for s in range(self.c.nseg):
            if self.c.seg[2 * s] == start and self.c.seg[2 * s + 1] == start + size:
                return s
        return -1

    def __dealloc__(self):
        Py_XDECREF(self.c.watch.pending)
        PyMem_Free(self.c.n_in)
        PyMem_Free(self.c.n_out)
        PyMem_Free(self.c.act)
        PyMem_Free(self.c.alpha)
        PyMem_Free(self.c.W)
        PyMem_Free(self.c.b)
        PyMem_Free(self.c.A)
        PyMem_Free(self.c.dA)
        PyMem_Free(self.c.dW)
        PyMem_Free(self.c.db)
        PyMem_Free(self.c.wseg)
        PyMem_Free(self.c.bseg)
        PyMem_Free(self.c.drop_rate)
        PyMem_Free(self.c.drop_seed)
        PyMem_Free(self.c.mask)
        PyMem_Free(self.c.Ad)
        PyMem_Free(self.c.dAd)
        PyMem_Free(self.c.Z)
        PyMem_Free(self.c.bn)
        PyMem_Free(self.c.bn_train)
        PyMem_Free(self.c.bn_eps)
        PyMem_Free(self.c.bn_mom)
        PyMem_Free(self.c.bnp)
        PyMem_Free(self.c.kind)
        PyMem_Free(self.c.tin)
        PyMem_Free(self.c.tout)
        PyMem_Free(self.c.Wh)
        PyMem_Free(self.c.dWh)
        PyMem_Free(self.c.seq)
        PyMem_Free(self.c.bptt)
        PyMem_Free(self.c.ws)
        PyMem_Free(self.c.seg_reg_m)
        PyMem_Free(self.c.reg_coef_m)
        free(self.c.WT)


cdef int check_blas_dims(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n) except -1:
    blas_dim(m, "batch capacity")
    blas_dim(k, "n_in")
    blas_dim(n, "n_out")
    return 0


cdef double c_regularization(const floating* p, const int64_t* seg, const double* coef,
                             Py_ssize_t nreg) noexcept nogil:
    """Σ over the listed variables of l1·Σ|p| + l2·Σp² (vectorized sums, see _fastmath.h)."""
    cdef double total = 0
    cdef Py_ssize_t s
    cdef const floating* q
    cdef long n
    for s in range(nreg):
        q = p + seg[2 * s]
        n = seg[2 * s + 1] - seg[2 * s]
        if floating is float:
            if coef[2 * s] != 0:
                total += coef[2 * s] * fastbp_sum_abs_f(q, n)
            if coef[2 * s + 1] != 0:
                total += coef[2 * s + 1] * fastbp_sum_sq_f(q, n)
        else:
            if coef[2 * s] != 0:
                total += coef[2 * s] * fastbp_sum_abs_d(q, n)
            if coef[2 * s + 1] != 0:
                total += coef[2 * s + 1] * fastbp_sum_sq_d(q, n)
    return total


cdef bint plain_sgd(PlanC* p, Py_ssize_t m, bint single) noexcept nogil:
    """Fuse the update into the backward pass for batches of m rows (backward_sgd)? Where the
    update is SGD without momentum, clipping or L1 (each element's update then depends on its
    own gradient only, so layers can be updated as their backward ends), and some layer's dW
    is the small-GEMM kernel's size (else nothing is gained: XOR's 2-2-1 stepped 5-9% slower
    layer by layer). Decided once per epoch: the hyperparameters do not change within one."""
    cdef const double* h = p.hyper
    cdef Py_ssize_t s
    cdef int l
    cdef bint fits = False
    if (not p.sgd_fusable or p.has_post or p.per_row or p.opt_kind != SGD
            or h[H_MOMENTUM] != 0):
        return False
    if h[H_CLIPNORM] > 0 or h[H_CLIPVALUE] > 0 or h[H_GLOBAL_CLIPNORM] > 0:
        return False
    for s in range(p.nseg):
        if p.seg_reg[2 * s] != 0:
            return False
    for l in range(p.n_layers):
        fits = fits or (p.wseg[l] >= 0 and rows_gemm(m * p.n_in[l] * p.n_out[l], single))
    return fits


cdef void update_one(PlanC* p, floating* params, Py_ssize_t s, double t) noexcept nogil:
    """c_optimizer_step on segment s alone (no clipping: see plain_sgd)."""
    update_segment(p.opt_kind, params, <floating*>p.grads, <floating*>p.s0,
                   <floating*>p.s1, p.seg[2 * s], p.seg[2 * s + 1], <floating>p.seg_reg[2 * s],
                   <floating>(2 * p.seg_reg[2 * s + 1]), 1, p.hyper,
                   step_coef(p.opt_kind, p.hyper, t))


cdef void backward_sgd(PlanC* p, int l, floating* X, int act, int m, double t) noexcept nogil:
    """c_dense_backward of layer l (its dX needs the weights before the update), then the
    layer's plain SGD update; where dW = Xᵀ·dZ is the small-GEMM kernel's size, dW is not
    stored but fused into the update (Nielsen's 784-30-10 at batch 10: no 94 KB dW written
    and read back)."""
    cdef int k = p.n_in[l], n = p.n_out[l]
    cdef floating* W = <floating*>p.W[l]
    cdef Py_ssize_t s = p.wseg[l]
    cdef bint fuse = s >= 0 and rows_gemm(<Py_ssize_t>m * n * k, sizeof(floating) == 4)
    c_dense_backward(X, W, <floating*>p.A[l], <floating*>p.dA[l], act, <floating>p.alpha[l],
                     NULL if fuse else <floating*>p.dW[l], <floating*>p.db[l],
                     NULL if l == 0 else <floating*>p.dA[l - 1], m, k, n)
    if fuse:  # dZ (in dA) and dX are taken; now W's update in place of its gradient's store
        gemm_rows_sgd(True, k, n, m, X, k, <floating*>p.dA[l], n,
                      <floating>(2 * p.seg_reg[2 * s + 1]), <floating>p.hyper[H_LR], W, n)
    elif s >= 0:
        update_one(p, <floating*>p.params, s, t)
    if p.bseg[l] >= 0:
        update_one(p, <floating*>p.params, p.bseg[l], t)


cdef double train_loss(PlanC* p, floating* P, const floating* Y, const int64_t* labels,
                       floating* dP, int m, bint count, Py_ssize_t* correct) noexcept nogil:
    """The batch's loss at outputs P (with the regularization penalty, taken at the weights the
    gradient is taken at); writes its gradient in dP; counts correct rows."""
    cdef double loss
    if p.loss_kind == SPARSE_CE:
        loss = c_loss_sparse(P, labels, dP, m, p.n_outputs, p.fused)
        if count:
            correct[0] += c_count_correct_sparse(P, labels, m, p.n_outputs)
    else:
        loss = c_loss(p.loss_kind, P, Y, dP, m, p.n_outputs, p.fused)
        if count:
            correct[0] += c_count_correct(P, Y, m, p.n_outputs)
    return loss + c_regularization(<floating*>p.params, p.reg_seg,
                                   p.reg_coef_m if p.per_row else p.reg_coef, p.nreg)


cdef inline void start_call(PlanC* p) noexcept:
    """Before a training call: no steps run, no stop yet."""
    watch_start(&p.watch)
    p.steps_run, p.nonfinite = 0, False


cdef bint epoch_ended(PlanC* p, Py_ssize_t e, Py_ssize_t steps, Py_ssize_t* done) noexcept nogil:
    """After epoch e of a call: True where the call stops here. ``done`` counts the epochs
    whose logs go back: the finished ones, and one stopped at a non-finite loss (its loss,
    NaN or inf, is what stops the fit); one stopped by a signal is dropped."""
    cdef bint finished = p.steps_run == (e + 1) * steps
    if finished or p.nonfinite:
        done[0] += 1
    if not finished or p.nonfinite:
        return True
    if p.stop_nonfinite and not params_finite(p):
        p.nonfinite = True
        return True
    return watch_signals(&p.watch)


cdef bint params_finite(PlanC* p) noexcept nogil:
    """Every trained parameter finite? (Σ|p| in double over each segment: inf or NaN exactly
    where one is.)"""
    cdef Py_ssize_t s, a, n
    cdef double total = 0
    for s in range(p.nseg):
        a, n = p.seg[2 * s], p.seg[2 * s + 1] - p.seg[2 * s]
        if p.itemsize == 4:
            total += fastbp_sum_abs_f(<float*>p.params + a, n)
        else:
            total += fastbp_sum_abs_d(<double*>p.params + a, n)
    return isfinite(total)


cdef inline double add_rows(double total, double loss, Py_ssize_t m) noexcept nogil:
    """total + loss·m, the epoch's running Σ batch loss · rows, in one explicit fused
    multiply-add: the compiler contracts a written-out a + b·m in some callers and not in
    others, and the team's and the serial loop's sums would differ in the last bit."""
    return fma(<double>m, loss, total)


cdef void penalty_rows(PlanC* p, int m) noexcept nogil:
    """penalty_per_row: this step's coefficients, those of the plan divided by its m rows."""
    cdef Py_ssize_t i
    for i in range(2 * p.nseg):
        p.seg_reg_m[i] = p.seg_reg[i] / m
    for i in range(2 * p.nreg):
        p.reg_coef_m[i] = p.reg_coef[i] / m


cdef inline floating* norm_out(PlanC* p, int l, floating* X) noexcept nogil:
    """Layer l's A, or its BatchNormalization's output (X: the step's input, for the type)."""
    return <floating*>(p.bnp[12 * l + 7] if p.bn[l] else p.A[l])


cdef inline floating* norm_dout(PlanC* p, int l, floating* X) noexcept nogil:
    """Layer l's dA, or its BatchNormalization's."""
    return <floating*>(p.bnp[12 * l + 8] if p.bn[l] else p.dA[l])


cdef inline floating* layer_out(PlanC* p, int l, floating* X, bint training=True) noexcept nogil:
    """What layer l + 1 reads: X for l = -1, else the output of layer l's BatchNormalization
    and (training) Dropout where they follow it."""
    if l < 0:
        if not p.pre:
            return X
        l = p.n_layers
    return <floating*>p.Ad[l] if training and p.drop_rate[l] > 0 else norm_out(p, l, X)


cdef inline floating* layer_dout(PlanC* p, int l, floating* X) noexcept nogil:
    """Where layer l + 1 writes its dX: the first of the Dropout's, the BatchNormalization's and
    layer l's dA (X: the step's input, for the float type); l = -1: those on the inputs."""
    if l < 0:
        l = p.n_layers
    return <floating*>p.dAd[l] if p.drop_rate[l] > 0 else norm_dout(p, l, X)


cdef void norm_rows(PlanC* p, int l, Py_ssize_t m, bint forward, floating* X,
                    bint training=True) noexcept nogil:
    """The BatchNormalization after layer l on m rows: forward from layer l's A into its A
    (with batch statistics where training and not frozen); backward from its dA into layer l's
    dA (dγ, dβ into its gradients), as the layer-by-layer path calls the same kernels (through
    fixed statistics where it is frozen)."""
    cdef void** q = p.bnp + 12 * l
    cdef Py_ssize_t n = p.n_out[l]
    if forward:
        c_batchnorm_forward(<floating*>p.A[l], <floating*>q[0], <floating*>q[1], p.bn_eps[l],
                            training and p.bn_train[l], p.bn_mom[l], <floating*>q[2],
                            <floating*>q[3],
                            <floating*>q[4], <floating*>q[5], <floating*>q[6], <floating*>q[7],
                            m, n)
    elif p.bn_train[l]:
        c_batchnorm_backward(<floating*>q[8], <floating*>q[6], <floating*>q[0],
                             <floating*>q[5], <floating*>q[9], <floating*>q[10],
                             <floating*>p.dA[l], m, n)
    else:
        c_batchnorm_backward_frozen(<floating*>q[8], <floating*>q[0], <floating*>q[5],
                                    <floating*>p.dA[l], m, n)


cdef void dropout_rows(PlanC* p, int l, Py_ssize_t m, double t, bint forward,
                       floating* X) noexcept nogil:
    """The Dropout after layer l on m rows at step t (1-based, the mask's step is t - 1, the
    optimizer's iterations before the step, as the layer-by-layer path counts them): forward,
    mask = [u ≥ rate]/(1 − rate) and Ad = A ⊙ mask; backward, dA = dAd ⊙ mask. X: the step's
    input, for the float type."""
    cdef Py_ssize_t i, size = m * p.n_out[l]
    cdef floating* mk = <floating*>p.mask[l]
    cdef floating* a
    cdef floating* o
    cdef floating keep = 1.0 / (1.0 - p.drop_rate[l])
    cdef uint64_t seed = p.drop_seed[l], step = <uint64_t>(t - 1)
    if forward:
        a, o = norm_out(p, l, X), <floating*>p.Ad[l]
        for i in range(size):
            mk[i] = keep if uniform01(seed, step, i) >= p.drop_rate[l] else 0
            o[i] = a[i] * mk[i]
    else:
        a, o = <floating*>p.dAd[l], norm_dout(p, l, X)
        for i in range(size):
            o[i] = a[i] * mk[i]


cdef void forward_layer(PlanC* p, int l, floating* X, int m, double t,
                        bint training) noexcept nogil:
    """Layer l's forward on m samples, then its BatchNormalization and (training) Dropout;
    before layer 0, those on the inputs."""
    cdef int L = p.n_layers
    if l == 0 and p.pre:
        p.A[L] = X  # (the step's rows: the plan runs serially where it has these)
        if p.bn[L]:
            norm_rows(p, L, m * p.tin[0], True, X, training)
        if training and p.drop_rate[L] > 0:
            dropout_rows(p, L, m * p.tin[0], t, True, X)
    cdef floating* inp = layer_out(p, l - 1, X, training)
    cdef floating* W = <floating*>p.W[l]
    cdef floating* Wh = <floating*>p.Wh[l]
    cdef floating* b = <floating*>p.b[l]
    cdef floating* A = <floating*>p.A[l]
    cdef void** w = p.ws + MAX_WS * l
    cdef Py_ssize_t T = p.tin[l], rows = m * p.tout[l]
    cdef int k = p.n_in[l], n = p.n_out[l]
    if p.kind[l] == PLAN_DENSE:
        c_dense_forward(inp, W, b, p.act[l], <floating>p.alpha[l], A, <int>rows, k, n,
                        <floating*>p.Z[l])
    elif p.kind[l] == PLAN_RNN:
        c_rnn_forward(inp, W, Wh, b, p.act[l], <floating>p.alpha[l], <floating*>w[0],
                      <floating*>w[1], A, m, T, k, n, p.seq[l])
    elif p.kind[l] == PLAN_LSTM:
        c_lstm_forward(inp, W, Wh, b, <floating*>w[0], <floating*>w[1], <floating*>w[2],
                       <floating*>w[3], A, m, T, k, n, p.seq[l])
    else:
        c_gru_forward(inp, W, Wh, b, <floating*>w[0], <floating*>w[1], <floating*>w[2],
                      <floating*>w[3], <floating*>w[4], A, m, T, k, n, p.seq[l])
    if p.bn[l]:
        norm_rows(p, l, rows, True, X, training)
    if training and p.drop_rate[l] > 0:
        dropout_rows(p, l, rows, t, True, X)


cdef void backward_layer(PlanC* p, int l, floating* X, int m, int act) noexcept nogil:
    """Layer l's backward on m samples from its dA (its Dropout's and BatchNormalization's
    backward already done): its gradients, and dX into what the layer below wrote (none for
    the first layer, unless a BatchNormalization with batch statistics is on the inputs). act:
    the Dense activation whose derivative is applied."""
    cdef floating* inp = layer_out(p, l - 1, X)
    cdef floating* dX = layer_dout(p, l - 1, X) if l > 0 or pre_backward(p) else NULL
    cdef floating* W = <floating*>p.W[l]
    cdef floating* Wh = <floating*>p.Wh[l]
    cdef floating* dA = <floating*>p.dA[l]
    cdef floating* dW = <floating*>p.dW[l]
    cdef floating* dWh = <floating*>p.dWh[l]
    cdef floating* db = <floating*>p.db[l]
    cdef void** w = p.ws + MAX_WS * l
    cdef Py_ssize_t T = p.tin[l], bptt = p.bptt[l]
    cdef int k = p.n_in[l], n = p.n_out[l]
    if p.kind[l] == PLAN_DENSE:
        c_dense_backward(inp, W, <floating*>p.A[l], dA, act, <floating>p.alpha[l], dW, db, dX,
                         <int>(m * T), k, n, <floating*>p.Z[l])
    elif p.kind[l] == PLAN_RNN:
        c_rnn_backward(<floating*>w[0], W, Wh, <floating*>w[1], dA, p.act[l],
                       <floating>p.alpha[l], bptt, <floating*>w[2], dW, dWh, db, dX, m, T, k,
                       n, p.seq[l])
    elif p.kind[l] == PLAN_LSTM:
        c_lstm_backward(<floating*>w[0], W, Wh, <floating*>w[1], <floating*>w[2],
                        <floating*>w[3], dA, bptt, <floating*>w[4], <floating*>w[5],
                        <floating*>w[6], dW, dWh, db, dX, m, T, k, n, p.seq[l])
    else:
        c_gru_backward(<floating*>w[0], W, Wh, <floating*>w[1], <floating*>w[2],
                       <floating*>w[3], dA, bptt, <floating*>w[5], <floating*>w[6],
                       <floating*>w[7], dW, dWh, db, dX, m, T, k, n, p.seq[l])


cdef inline bint pre_backward(PlanC* p) noexcept nogil:
    """Does the inputs' BatchNormalization learn (γ, β from batch statistics)? Then the
    backward runs down to it; a Dropout or a frozen BatchNormalization there needs none."""
    return p.pre and p.bn[p.n_layers] and p.bn_train[p.n_layers]


cdef double c_train_step(PlanC* p, floating* X, const floating* Y, const int64_t* labels,
                         int m, double t, bint count, Py_ssize_t* correct,
                         bint sgd) noexcept nogil:
    """One step on samples X (m, n_inputs); returns the loss (with regularization). sgd: the
    update is fused into the backward pass (see plain_sgd)."""
    cdef int l, L = p.n_layers, act
    cdef Py_ssize_t rows
    cdef double loss
    if p.per_row:
        penalty_rows(p, m)
    for l in range(L):
        forward_layer(p, l, X, m, t, True)
    # (the outputs of the last layer's BatchNormalization and Dropout where they follow it)
    loss = train_loss(p, layer_out(p, L - 1, X), Y, labels, layer_dout(p, L - 1, X),
                      <int>(m * p.tout[L - 1]), count, correct)
    for l in range(L - 1, -1, -1):
        act = LINEAR if (p.fused and l == L - 1) else p.act[l]
        rows = m * p.tout[l]
        if p.drop_rate[l] > 0:
            dropout_rows(p, l, rows, t, False, X)
        if p.bn[l]:
            norm_rows(p, l, rows, False, X)
        if sgd:
            backward_sgd(p, l, layer_out(p, l - 1, X), act, m, t)
        else:
            backward_layer(p, l, X, m, act)
    if pre_backward(p):  # the inputs' Dropout, then BatchNormalization (its dX unread)
        rows = m * p.tin[0]
        if p.drop_rate[L] > 0:
            dropout_rows(p, L, rows, t, False, X)
        norm_rows(p, L, rows, False, X)
    if not sgd:
        c_optimizer_step(p.opt_kind, <floating*>p.params, <floating*>p.grads,
                         <floating*>p.s0, <floating*>p.s1, p.hyper, t, p.seg,
                         p.seg_reg_m if p.per_row else p.seg_reg, p.nseg)
    return loss


cdef inline void batch_rows(PlanC* p, floating* X, const floating* Y, const int64_t* labels,
                            const int64_t* order, Py_ssize_t start, Py_ssize_t r0,
                            Py_ssize_t r1, floating* Xb, floating* Yb, int64_t* Lb,
                            floating** xb, const floating** yb,
                            const int64_t** lb) noexcept nogil:
    """The batch starting at row ``start``: gathered through ``order`` into Xb/Yb/Lb (its rows
    r0..r1 here: a thread's part), or pointers into X/Y/labels where there is no order."""
    cdef Py_ssize_t r, src, k = p.n_inputs, o = p.y_width, lw = p.label_width
    if order != NULL:
        for r in range(r0, r1):
            src = order[start + r]
            memcpy(Xb + r * k, X + src * k, k * sizeof(floating))
            if labels != NULL:
                memcpy(Lb + r * lw, labels + src * lw, lw * sizeof(int64_t))
            else:
                memcpy(Yb + r * o, Y + src * o, o * sizeof(floating))
        xb[0], yb[0], lb[0] = Xb, Yb, Lb
    else:
        xb[0] = X + start * k
        yb[0] = Y + start * o if Y != NULL else NULL
        lb[0] = labels + start * lw if labels != NULL else NULL


# -- whole epochs on the two-thread team (_team.h) ---------------------------------------------
# A step is a sequence of phases, each cut in chunks that either thread takes (fastbp_chunks,
# _team.h): a shuffled batch's gather, by rows; each layer's forward (product, bias,
# activation), by its output columns; one chunk of the last layer's forward (where that layer is
# not cut: softmax, or narrow), the loss and the last layer's backward (where not cut); then for
# each layer l from the top down, by the columns of layer l - 1: that part of dX = dZ·Wᵀ (it
# reads all of layer l's dZ, hence a phase of its own), then layer l - 1's dZ, db and dW of the
# same columns (they read only that part of dX); the update, by element ranges of the
# segments. W3's 784-256-256-10: 6 phases a step. Either thread takes any chunk, so a thread
# whose core is taken for a while (by another process, the hypervisor) holds the other up only
# where it holds a chunk; fixed halves per thread would make it wait at every meeting (W3's
# epochs 1.02-1.03x slower alone, 1.04-1.13x beside a process that takes a core half the time:
# bench/ab_builds.py --workload W3). Every product runs in the small-GEMM kernel
# (gemm_blocked): no BLAS call in the region.

ctypedef struct EpochTeam:
    PlanC* p
    bint single
    void* X
    void* Y
    const int64_t* labels
    const int64_t* order
    Py_ssize_t n, bs
    void* Xb
    void* Yb
    int64_t* Lb
    double t, total  # total: Σ batch loss · batch rows, added by whoever takes the loss chunk
    bint count
    Py_ssize_t correct
    int updates  # chunks of the update phase
    fastbp_chunks q
    # a stop (a signal handler raised): the caller's thread sets ``interrupt``; whoever takes
    # step k's loss chunk then sets stop_after = k (once), and both threads end the epoch
    # after step k (each sees it at step k + 1's start: all of step k's phases have ended)
    int interrupt, stop_after
    Py_ssize_t steps  # the steps run (the caller's count)


ctypedef struct Cursor:
    # a thread's place in the sequence of phases
    unsigned int ph  # the current phase's number (from 1)
    long long base  # chunks of all phases before it
    bint back  # claims from the back (thread 1) or the front (thread 0)
    bint held  # a chunk of it is claimed and not yet finished


# the update phase's chunks: at most this many elements (W3: 13 chunks, 784·256 in 7)
cdef Py_ssize_t UPDATE_CHUNK = 1 << 15


cdef inline bint next_chunk(EpochTeam* e, Cursor* c, int nch, int* j) noexcept nogil:
    """Finish the chunk held and claim chunk j of the current phase's nch; False once none is
    left, after waiting until all are finished (the cursor then on the next phase)."""
    if c.held:
        fastbp_finished(&e.q)
        c.held = False
    j[0] = fastbp_claim(&e.q, c.ph, nch, c.back)
    if j[0] >= 0:
        c.held = True
        return True
    fastbp_wait_done(&e.q, c.base + nch)
    c.base += nch
    c.ph += 1
    return False


cdef inline int col_chunks(PlanC* p, int l, int act) noexcept nogil:
    """Chunks of layer l's output columns: one where a row is one computation (softmax) or the
    layer is narrow (< 32 units); else an even number (two threads finish together), one per
    64 columns or more (each chunk rereads the layer's input: W3's 256 columns in 4)."""
    cdef int n = p.n_out[l]
    if act == SOFTMAX or n < 32:
        return 1
    return max(2, min(8, n // 64) // 2 * 2)


cdef inline bint clips_by_norm(const double* h) noexcept nogil:
    """Does the update clip by norms of whole variables (clipnorm, global_clipnorm)? Then it is
    one piece of work."""
    return h[H_CLIPNORM] > 0 or h[H_GLOBAL_CLIPNORM] > 0


cdef inline int seg_parts(PlanC* p, Py_ssize_t s) noexcept nogil:
    """Update chunks of segment s: parts of at most UPDATE_CHUNK elements."""
    return <int>max(1, (p.seg[2 * s + 1] - p.seg[2 * s] + UPDATE_CHUNK - 1) // UPDATE_CHUNK)


cdef int update_chunks(PlanC* p) noexcept nogil:
    """Chunks of the update: one where it clips by norms, else every segment's parts."""
    cdef Py_ssize_t s
    cdef int total = 0
    if clips_by_norm(p.hyper):
        return 1
    for s in range(p.nseg):
        total += seg_parts(p, s)
    return total


cdef void update_chunk(PlanC* p, floating* params, int j, double t,
                       StepCoef coef) noexcept nogil:
    """Chunk j of the update (update_chunks): its segment's part, or the whole update."""
    cdef Py_ssize_t s, a, size
    cdef int parts
    cdef const double* reg = p.seg_reg_m if p.per_row else p.seg_reg  # (penalty_rows: the loss
    if clips_by_norm(p.hyper):                                        # chunk, phases before)
        c_optimizer_step(p.opt_kind, params, <floating*>p.grads, <floating*>p.s0,
                         <floating*>p.s1, p.hyper, t, p.seg, reg, p.nseg)
        return
    for s in range(p.nseg):
        a, size, parts = p.seg[2 * s], p.seg[2 * s + 1] - p.seg[2 * s], seg_parts(p, s)
        if j < parts:
            update_segment(p.opt_kind, params, <floating*>p.grads, <floating*>p.s0,
                           <floating*>p.s1, a + part_start(size, parts, j),
                           a + part_start(size, parts, j + 1), <floating>reg[2 * s],
                           <floating>(2 * reg[2 * s + 1]), 1, p.hyper, coef)
            return
        j -= parts


cdef inline void forward_cols(PlanC* p, int l, floating* inp, int m, int c0,
                              int c1) noexcept nogil:
    """Columns [c0, c1) of layer l's A = act(inp·W + b)."""
    cdef int k = p.n_in[l], n = p.n_out[l]
    cdef floating* A = <floating*>p.A[l]
    cdef floating* b = <floating*>p.b[l]
    gemm_blocked(False, m, c1 - c0, k, inp, k, <floating*>p.W[l] + c0, n, 0, A + c0, n)
    bias_act(A + c0, b + c0 if b != NULL else NULL, m, c1 - c0, n, p.act[l],
             <floating>p.alpha[l])


cdef inline void backward_cols(PlanC* p, int l, int act, floating* inp, int m, int c0,
                               int c1) noexcept nogil:
    """Columns [c0, c1) of layer l's dZ (in dA), db and dW = inpᵀ·dZ."""
    cdef int k = p.n_in[l], n = p.n_out[l]
    cdef floating* dA = <floating*>p.dA[l]
    cdef floating* db = <floating*>p.db[l]
    act_backward_db(<floating*>p.A[l] + c0, dA + c0, db + c0 if db != NULL else NULL, m,
                    c1 - c0, n, act, <floating>p.alpha[l])
    gemm_blocked(True, k, c1 - c0, m, inp, k, dA + c0, n, 0, <floating*>p.dW[l] + c0, n)


cdef bint team_epoch_worth(PlanC* p, Py_ssize_t m, bint sgd) noexcept nogil:
    """Is an epoch shaped for the team? Not with plain SGD fused into the backward pass
    (backward_sgd); else where the kernel exists, a step's products (Σ m·n_in·n_out
    multiply-adds) outweigh the ~10 µs a step's phase ends cost (W3's 784-256-256-10 at batch
    128: 34M; digits' 64-64-10 at 32: 151k, not split) and no layer is so large that BLAS's
    packed GEMM beats the small-GEMM kernel (W4's 512x2048x2048, 2^31: 274 ms a step with
    OpenBLAS's two threads, 357-376 on the team), nor the update more chunks than a phase holds
    (2^31 parameters). From shapes only: where the team does not run (one thread wanted, BLAS
    ran lately, another thread holds it) the serial loop computes the same numbers with every
    product in the team's kernel (fastbp_blas_avoid, gemm_rm)."""
    cdef Py_ssize_t macs = 0, one
    cdef int l
    if sgd or p.has_post or not FASTBP_GEMM_ROWS:
        return False
    if update_chunks(p) > FASTBP_MAX_CHUNKS:
        return False
    for l in range(p.n_layers):
        one = m * p.n_in[l] * p.n_out[l]
        if one > (1 << 26):
            return False
        macs += one
    return macs >= (1 << 22)


cdef void team_step(EpochTeam* e, Cursor* c, floating* X, const floating* Y,
                    const int64_t* labels, int m, double t, int k) noexcept nogil:
    """c_train_step's work, the chunks this thread takes of it (the loss chunk's taker adds the
    loss to e.total)."""
    cdef PlanC* p = e.p
    cdef int l, L = p.n_layers, j, nch, c0, c1, n
    cdef int top = LINEAR if p.fused else p.act[L - 1]  # the last layer's backward
    cdef bint fwd_whole = col_chunks(p, L - 1, p.act[L - 1]) == 1
    cdef bint bwd_whole = col_chunks(p, L - 1, top) == 1
    cdef floating* below
    cdef double loss
    cdef StepCoef coef = step_coef(p.opt_kind, p.hyper, t)
    for l in range(L if not fwd_whole else L - 1):
        nch = col_chunks(p, l, p.act[l])
        while next_chunk(e, c, nch, &j):
            forward_cols(p, l, X if l == 0 else <floating*>p.A[l - 1], m,
                         part_start(p.n_out[l], nch, j), part_start(p.n_out[l], nch, j + 1))
    below = X if L == 1 else <floating*>p.A[L - 2]
    while next_chunk(e, c, 1, &j):  # the loss, with the last layer where it is not cut
        if fwd_whole:
            forward_cols(p, L - 1, below, m, 0, p.n_out[L - 1])
        if p.per_row:
            penalty_rows(p, m)
        loss = train_loss(p, <floating*>p.A[L - 1], Y, labels, <floating*>p.dA[L - 1], m,
                          e.count, &e.correct)
        e.total = add_rows(e.total, loss, m)
        if p.stop_nonfinite and not isfinite(loss):
            p.nonfinite = True
        if (p.nonfinite or fastbp_flag_get(&e.interrupt)) and fastbp_flag_get(&e.stop_after) < 0:
            fastbp_flag_set(&e.stop_after, k)
        if bwd_whole:
            backward_cols(p, L - 1, top, below, m, 0, p.n_out[L - 1])
    if not bwd_whole:
        nch = col_chunks(p, L - 1, top)
        while next_chunk(e, c, nch, &j):
            backward_cols(p, L - 1, top, below, m, part_start(p.n_out[L - 1], nch, j),
                          part_start(p.n_out[L - 1], nch, j + 1))
    for l in range(L - 1, 0, -1):  # dX of layer l, then layer l - 1's backward, by its columns
        n = p.n_out[l]
        nch = col_chunks(p, l - 1, p.act[l - 1])
        while next_chunk(e, c, nch, &j):
            c0, c1 = part_start(p.n_in[l], nch, j), part_start(p.n_in[l], nch, j + 1)
            if c1 > c0:  # (W[c0:c1])ᵀ, in its own part of the scratch: the kernel reads B by rows
                transpose(<floating*>p.W[l] + c0 * n, n, c1 - c0, n,
                          <floating*>p.WT + c0 * n)
                gemm_blocked(False, m, c1 - c0, n, <floating*>p.dA[l], n,
                             <floating*>p.WT + c0 * n, c1 - c0, 0,
                             <floating*>p.dA[l - 1] + c0, p.n_in[l])
                backward_cols(p, l - 1, p.act[l - 1], X if l == 1 else <floating*>p.A[l - 2],
                              m, c0, c1)
    while next_chunk(e, c, e.updates, &j):
        update_chunk(p, <floating*>p.params, j, t, coef)


cdef void team_epoch_part(EpochTeam* e, floating* X, int tid) noexcept nogil:
    """c_train_epoch's loop: the chunks of every step this thread takes."""
    cdef Py_ssize_t start = 0, m
    cdef int j, k = 0, stop
    cdef floating* xb
    cdef const floating* yb
    cdef const int64_t* lb
    cdef double t = e.t
    cdef Cursor c
    c.ph, c.base, c.back, c.held = 1, 0, tid == 1, False
    while start < e.n:
        if tid == 0 and k > 0 and watch_signals(&e.p.watch):  # (only the caller's thread
            fastbp_flag_set(&e.interrupt, 1)                  # has a Python thread state)
        stop = fastbp_flag_get(&e.stop_after)
        if 0 <= stop < k:
            break
        m = min(e.bs, e.n - start)
        if e.order != NULL:
            while next_chunk(e, &c, 2, &j):
                batch_rows(e.p, X, <floating*>e.Y, e.labels, e.order, start, part_start(m, 2, j),
                           part_start(m, 2, j + 1), <floating*>e.Xb, <floating*>e.Yb, e.Lb, &xb, &yb,
                           &lb)
        # (no rows: the batch's pointers alone)
        batch_rows(e.p, X, <floating*>e.Y, e.labels, e.order, start, 0, 0, <floating*>e.Xb,
                   <floating*>e.Yb, e.Lb, &xb, &yb, &lb)
        t += 1
        team_step(e, &c, xb, yb, lb, <int>m, t, k)
        start += e.bs
        k += 1
    if tid == 0:
        e.steps = k


cdef void epoch_job(void* ctx, int tid) noexcept nogil:
    cdef EpochTeam* e = <EpochTeam*>ctx
    cdef unsigned int csr = fastbp_ftz_on()  # the helper's own FP mode (the caller's is set)
    if e.single:
        team_epoch_part(e, <float*>e.X, tid)
    else:
        team_epoch_part(e, <double*>e.X, tid)
    fastbp_ftz_restore(csr)



# a shuffled epoch whose rows (inputs and targets) take at most this many bytes is gathered
# whole before its steps (c_train_epoch), larger ones batch by batch
cdef Py_ssize_t WHOLE_EPOCH = 1 << 22


def _set_whole_epoch_bytes(Py_ssize_t limit):
    """Gather shuffled epochs of at most ``limit`` bytes whole (0: always batch by batch; for
    tests). Returns the previous limit."""
    global WHOLE_EPOCH
    old, WHOLE_EPOCH = WHOLE_EPOCH, max(limit, 0)
    return old


cdef double c_train_epoch(PlanC* p, floating* X, const floating* Y, const int64_t* labels,
                          const int64_t* order, Py_ssize_t n, Py_ssize_t bs, floating* Xb,
                          floating* Yb, int64_t* Lb, bint whole, double t, bint count,
                          Py_ssize_t* correct) noexcept nogil:
    """Steps over rows [0, n) in batches of bs (gathered through ``order`` when given: all n
    rows at once into Xb/Yb/Lb where ``whole``, else batch by batch); returns Σ batch loss ·
    batch rows."""
    cdef Py_ssize_t start = 0, m
    cdef double total = 0
    cdef floating* xb
    cdef const floating* yb
    cdef const int64_t* lb
    cdef bint sgd = plain_sgd(p, min(bs, n), sizeof(floating) == 4)
    cdef double loss
    cdef EpochTeam e
    cdef int blas = fastbp_blas_avoided()
    if team_epoch_worth(p, min(bs, n), sgd):
        if p.WT == NULL:  # (out of memory: the serial loop below)
            p.WT = malloc(p.wt * sizeof(floating))
        if p.WT != NULL:
            e.p, e.single, e.X, e.Y, e.labels, e.order = p, floating is float, X, <void*>Y, labels, order
            e.n, e.bs, e.Xb, e.Yb, e.Lb, e.t, e.total = n, bs, Xb, Yb, Lb, t, 0
            e.count, e.correct, e.updates = count, 0, update_chunks(p)
            e.interrupt, e.stop_after, e.steps = 0, -1, 0
            fastbp_chunks_init(&e.q)
            if fastbp_team_run(epoch_job, &e):
                correct[0] += e.correct
                p.steps_run += e.steps
                return e.total
        blas = fastbp_blas_avoid(1)  # the team refused this epoch: no BLAS call (_team.h)
    if whole and order != NULL:
        # the epoch's rows in their shuffled order, then contiguous batches (digits: 1.01x an
        # epoch, in-process A/B; the same rows in the same order, so the same numbers)
        batch_rows(p, X, Y, labels, order, 0, 0, n, Xb, Yb, Lb, &xb, &yb, &lb)
        X, Y, labels, order = xb, yb, lb, NULL
    while start < n:
        m = min(bs, n - start)
        batch_rows(p, X, Y, labels, order, start, 0, m, Xb, Yb, Lb, &xb, &yb, &lb)
        if order != NULL and start + bs < n:
            prefetch_rows(X, order + start + bs, min(bs, n - start - bs),
                          p.n_inputs * sizeof(floating))
        t += 1
        loss = c_train_step(p, xb, yb, lb, <int>m, t, count, correct, sgd)
        total = add_rows(total, loss, m)
        start += bs
        p.steps_run += 1
        if p.stop_nonfinite and not isfinite(loss):
            p.nonfinite = True
            break
        if watch_signals(&p.watch):
            break
    fastbp_blas_restore(blas)
    return total


cdef extern from *:
    void __builtin_prefetch(const void* addr, int rw, int locality) noexcept nogil


cdef inline void prefetch_rows(const void* X, const int64_t* rows, Py_ssize_t count,
                               Py_ssize_t row_bytes) noexcept nogil:
    """Ask for the next batch's rows while this one trains: gathered batch by batch (an epoch
    larger than WHOLE_EPOCH), they came from L3 or memory at the gather (MNIST's 784 inputs in
    batches of 10: the gather's copies were a fifth of the epoch). Into L2 (locality 1): a
    Nielsen MNIST epoch 1.086-1.089x (in-process A/B); into L1 they pushed out the step's own
    data (1.02x)."""
    cdef Py_ssize_t r, off
    cdef const char* row
    for r in range(count):
        row = <const char*>X + rows[r] * row_bytes
        for off in range(0, row_bytes, 64):
            __builtin_prefetch(row + off, 0, 1)


def _targets(Plan p, Y, labels, Py_ssize_t n):
    if p.c.loss_kind == SPARSE_CE:
        if Y is not None:
            raise ValueError("Y must be None for the sparse loss (pass labels)")
        _need(labels, "labels", I64, (n * p.c.label_width,))
        check_labels(labels, n * p.c.label_width, p.c.n_outputs)
    else:
        if labels is not None:
            raise ValueError("labels must be None for a dense-target loss (pass Y)")
        _need(Y, "Y", F32 if p.c.itemsize == 4 else F64, (n, p.c.y_width))


cdef Py_ssize_t epoch_rows(Plan p, X, Y, labels, Py_ssize_t batch_size) except -1:
    """Check X, Y | labels and batch_size against the plan (train_epoch, train_epochs); the
    number of rows."""
    dtype = F32 if p.c.itemsize == 4 else F64
    n = X.shape[0] if isinstance(X, np.ndarray) and X.ndim == 2 else 0
    if n < 1:
        raise ValueError("X must be a 2-D array with at least one row")
    _need(X, "X", dtype, (n, p.c.n_inputs))
    _targets(p, Y, labels, n)
    if not 1 <= batch_size <= p.c.capacity:
        raise ValueError(f"batch_size must be in [1, {p.c.capacity}], got {batch_size}")
    return n


cdef class EpochBuffers:
    """Gather buffers for shuffled epochs (once per call, not per batch): the whole shuffled
    epoch where it is small (WHOLE_EPOCH bytes), else one batch; raw pointers for nogil."""

    cdef object Xb, Yb, Lb
    cdef bint whole
    cdef void* px
    cdef void* py
    cdef int64_t* pl

    def __cinit__(self, Plan p, Py_ssize_t n, Py_ssize_t batch_size, bint shuffled, bint dense_y,
                  bint sparse_y):
        dtype = F32 if p.c.itemsize == 4 else F64
        self.whole = shuffled and n * (p.c.n_inputs + p.c.y_width) * p.c.itemsize <= WHOLE_EPOCH
        rows = n if self.whole else batch_size
        self.Xb = np.empty((rows, p.c.n_inputs), dtype) if shuffled else None
        self.Yb = np.empty((rows, p.c.y_width), dtype) if shuffled and dense_y else None
        self.Lb = np.empty(rows * p.c.label_width, np.int64) if shuffled and sparse_y else None
        self.px = _ptr(self.Xb) if self.Xb is not None else NULL
        self.py = _ptr(self.Yb) if self.Yb is not None else NULL
        self.pl = <int64_t*>_ptr(self.Lb) if self.Lb is not None else NULL


cdef double run_epoch(Plan p, void* px, void* py, int64_t* pl, int64_t* po, Py_ssize_t n,
                      Py_ssize_t batch_size, EpochBuffers buf, double t, bint count,
                      Py_ssize_t* correct) noexcept nogil:
    """c_train_epoch in the plan's dtype."""
    if p.c.itemsize == 4:
        return c_train_epoch[float](&p.c, <float*>px, <float*>py, pl, po, n, batch_size,
                                    <float*>buf.px, <float*>buf.py, buf.pl, buf.whole, t, count,
                                    correct)
    return c_train_epoch[double](&p.c, <double*>px, <double*>py, pl, po, n, batch_size,
                                 <double*>buf.px, <double*>buf.py, buf.pl, buf.whole, t, count,
                                 correct)


def train_epoch(Plan p, X, Y, labels, order, Py_ssize_t batch_size, double t, bint count):
    """One epoch of steps over (X, Y | labels) in batches of ``batch_size`` rows, in ``order``
    (a permutation, or None for the stored order). Returns (Σ loss·rows, correct, t after)."""
    cdef Py_ssize_t n = epoch_rows(p, X, Y, labels, batch_size)
    if order is not None:
        _need(order, "order", I64, (n,))
        if first_outside(order, n) >= 0:  # one pass (order.min() and .max(): 6 µs an epoch)
            raise ValueError(f"order must hold row indices in [0, {n})")
    cdef EpochBuffers buf = EpochBuffers(p, n, batch_size, order is not None, Y is not None,
                                         labels is not None)
    cdef Py_ssize_t correct = 0
    cdef double total
    cdef void* py = _ptr(Y) if Y is not None else NULL
    cdef int64_t* pl = <int64_t*>_ptr(labels) if labels is not None else NULL
    cdef int64_t* po = <int64_t*>_ptr(order) if order is not None else NULL
    cdef void* px = _ptr(X)
    cdef unsigned int csr
    start_call(&p.c)
    with nogil:
        csr = fastbp_ftz_on()
        total = run_epoch(p, px, py, pl, po, n, batch_size, buf, t, count, &correct)
        fastbp_ftz_restore(csr)
    p.raise_pending((np.zeros(0), np.zeros(0, np.int64), t + p.c.steps_run))
    return total, correct, t + p.c.steps_run


def train_epochs(Plan p, X, Y, labels, draws, Py_ssize_t epochs, Py_ssize_t batch_size,
                 double t, bint count, orders=None):
    """``epochs`` epochs in one call, each as train_epoch runs it in the order
    ``fisher_yates(draws[e])`` (draws: (epochs, n) uniform numbers in [0, 1)), or
    ``orders[e]`` (orders: (epochs, n) int64 row indices, draws None), or in the stored order
    where both are None. Between a fit's epochs Python ran cold (a digits epoch
    moves 0.7 MB through the caches): its shuffle took 20 µs there, 8 µs alone.

    Returns (totals (k,) float64: Σ loss·rows per epoch, corrects (k,) int64, t after) of the
    k epochs run: all ``epochs``, or fewer where the plan's ``stop_nonfinite`` ended the call
    (the last one then stopped at its non-finite step). A signal handler's exception
    (Ctrl-C) stops the call at a step's end and is raised with ``interrupted`` set.
    """
    cdef Py_ssize_t n = epoch_rows(p, X, Y, labels, batch_size), e
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if draws is not None:
        _need(draws, "draws", F64, (epochs, n))
        if not ((draws >= 0) & (draws < 1)).all():  # NaN fails too
            raise ValueError("draws must lie in [0, 1)")
    if orders is not None:
        if draws is not None:
            raise ValueError("give draws or orders, not both")
        _need(orders, "orders", I64, (epochs, n))
        if first_outside(orders.reshape(-1), n) >= 0:
            raise ValueError(f"orders must hold row indices in [0, {n})")
    cdef bint shuffled = draws is not None or orders is not None
    cdef EpochBuffers buf = EpochBuffers(p, n, batch_size, shuffled, Y is not None,
                                         labels is not None)
    order = np.empty(n if draws is not None else 0, np.int64)
    cdef int64_t* given = <int64_t*>_ptr(orders) if orders is not None else NULL
    totals, corrects = np.zeros(epochs), np.zeros(epochs, np.int64)
    cdef double[::1] tot = totals
    cdef int64_t[::1] cor = corrects
    cdef const double* pu = <double*>_ptr(draws) if draws is not None else NULL
    cdef int64_t* po = <int64_t*>_ptr(order) if draws is not None else NULL
    cdef void* py = _ptr(Y) if Y is not None else NULL
    cdef int64_t* pl = <int64_t*>_ptr(labels) if labels is not None else NULL
    cdef void* px = _ptr(X)
    cdef Py_ssize_t correct, steps = (n + batch_size - 1) // batch_size, done = 0
    cdef unsigned int csr
    start_call(&p.c)
    with nogil:
        csr = fastbp_ftz_on()
        for e in range(epochs):
            if pu != NULL:  # the draws were checked above: it cannot refuse them here
                c_fisher_yates(pu + e * n, po, n)
            elif given != NULL:
                po = given + e * n
            correct = 0
            tot[e] = run_epoch(p, px, py, pl, po, n, batch_size, buf, t + p.c.steps_run, count,
                               &correct)
            cor[e] = correct
            if epoch_ended(&p.c, e, steps, &done):
                break
        fastbp_ftz_restore(csr)
    p.raise_pending((totals[:done], corrects[:done], t + p.c.steps_run))
    return totals[:done], corrects[:done], t + p.c.steps_run


cdef bint c_fisher_yates(const double* u, int64_t* o, Py_ssize_t n) noexcept nogil:
    """o = the permutation of range(n) from draws u in [0, 1): see fisher_yates. False (o
    unfinished) at a draw outside [0, 1) or NaN."""
    cdef Py_ssize_t i, j
    cdef int64_t tmp
    for i in range(n):
        o[i] = i
    for i in range(n - 1, 0, -1):
        if not (0 <= u[i] < 1):
            return False
        j = <Py_ssize_t>(u[i] * <double>(i + 1))
        if j > i:  # u·(i+1) may round up to i+1 for u just below 1
            j = i
        tmp = o[i]
        o[i] = o[j]
        o[j] = tmp
    return True


def fisher_yates(const double[::1] u):
    """Permutation of range(n) from n uniform draws u in [0, 1): for i = n-1 .. 1, swap
    entries i and j = min(⌊u[i]·(i+1)⌋, i). fastbp.model.shuffled_order does the same in Python
    where this module is absent (same order)."""
    cdef Py_ssize_t n = u.shape[0]
    order = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] o = order
    cdef bint ok = True
    if n:
        with nogil:
            ok = c_fisher_yates(&u[0], &o[0], n)
    if not ok:
        raise ValueError("u must hold numbers in [0, 1)")
    return order


def train_step(Plan p, X, Y, labels, double t):
    """One step on the whole of (X, Y | labels) as a batch, as step number t; returns the loss."""
    return train_epoch(p, X, Y, labels, None, X.shape[0] if isinstance(X, np.ndarray) else 0,
                       t, False)[0] / X.shape[0]


cdef void c_infer(PlanC* p, floating* X, const floating* Y, const int64_t* labels,
                  floating* out, Py_ssize_t n, Py_ssize_t bs, bint count, double* total,
                  Py_ssize_t* correct) noexcept nogil:
    """The inference forward pass (no Dropout, BatchNormalization on its moving statistics)
    over samples [0, n) in batches of bs: each batch's outputs copied into ``out`` where given;
    with targets, Σ batch loss · batch samples into total (without regularization; the loss's
    gradient goes to the last layer's dA, unread) and the correct rows into correct."""
    cdef Py_ssize_t start = 0, m, rows
    cdef int l, L = p.n_layers
    cdef floating* P
    cdef floating* xb
    while start < n:
        m = min(bs, n - start)
        xb = X + start * p.n_inputs
        for l in range(L):
            forward_layer(p, l, xb, <int>m, 0, False)
        P = layer_out(p, L - 1, xb, False)
        if out != NULL:
            memcpy(out + start * p.y_width, P, m * p.y_width * sizeof(floating))
        rows = m * p.tout[L - 1]
        if labels != NULL:
            total[0] += m * c_loss_sparse(P, labels + start * p.label_width,
                                          <floating*>p.dA[L - 1], rows, p.n_outputs, p.fused)
            if count:
                correct[0] += c_count_correct_sparse(P, labels + start * p.label_width, rows,
                                                     p.n_outputs)
        elif Y != NULL:
            total[0] += m * c_loss(p.loss_kind, P, Y + start * p.y_width,
                                   <floating*>p.dA[L - 1], rows, p.n_outputs, p.fused)
            if count:
                correct[0] += c_count_correct(P, Y + start * p.y_width, rows, p.n_outputs)
        start += bs
        if watch_signals(&p.watch):
            break


def infer(Plan p, X, Y, labels, out, Py_ssize_t batch_size, bint count):
    """Forward passes (inference mode) over X (n, n_inputs) in batches of ``batch_size``:
    outputs into ``out`` (n, outputs per sample) where given; with targets (Y | labels, as
    train_epoch takes them, or both None), the loss summed over batches as Σ mean·samples.
    Returns (Σ loss·samples, correct rows)."""
    dtype = F32 if p.c.itemsize == 4 else F64
    cdef Py_ssize_t n = X.shape[0] if isinstance(X, np.ndarray) and X.ndim == 2 else 0
    if n < 1:
        raise ValueError("X must be a 2-D array with at least one row")
    _need(X, "X", dtype, (n, p.c.n_inputs))
    if Y is not None or labels is not None:
        _targets(p, Y, labels, n)
    if out is not None:
        _need(out, "out", dtype, (n, p.c.y_width), True)
    if not 1 <= batch_size <= p.c.capacity:
        raise ValueError(f"batch_size must be in [1, {p.c.capacity}], got {batch_size}")
    cdef double total = 0
    cdef Py_ssize_t correct = 0
    cdef void* px = _ptr(X)
    cdef void* py = _ptr(Y) if Y is not None else NULL
    cdef int64_t* pl = <int64_t*>_ptr(labels) if labels is not None else NULL
    cdef void* po = _ptr(out) if out is not None else NULL
    cdef unsigned int csr
    watch_start(&p.c.watch)
    with nogil:
        csr = fastbp_ftz_on()
        if p.c.itemsize == 4:
            c_infer[float](&p.c, <float*>px, <float*>py, pl, <float*>po, n, batch_size, count,
                           &total, &correct)
        else:
            c_infer[double](&p.c, <double*>px, <double*>py, pl, <double*>po, n, batch_size,
                            count, &total, &correct)
        fastbp_ftz_restore(csr)
    p.raise_pending(None)
    return total, correct


# -- the full gradient without an update (L-BFGS) -------------------------------------------

cdef double c_grad_pass(PlanC* p, floating* X, const floating* Y, const int64_t* labels,
                        int m) noexcept nogil:
    """Forward, loss and backward of m rows as c_train_step runs them, no update: the loss
    (with the penalty) is returned and its whole gradient, the penalty's l2·2p + l1·sign(p) on
    each trainable segment included, left in grads."""
    cdef int l, L = p.n_layers, act
    cdef Py_ssize_t s, i, rows
    cdef double loss
    cdef const double* reg
    cdef floating* g = <floating*>p.grads
    cdef const floating* w = <floating*>p.params
    cdef floating l1, l2x2
    if p.per_row:
        penalty_rows(p, m)
    for l in range(L):
        forward_layer(p, l, X, m, 0, True)
    loss = train_loss(p, layer_out(p, L - 1, X), Y, labels, layer_dout(p, L - 1, X),
                      <int>(m * p.tout[L - 1]), False, NULL)
    for l in range(L - 1, -1, -1):
        act = LINEAR if (p.fused and l == L - 1) else p.act[l]
        rows = m * p.tout[l]
        if p.drop_rate[l] > 0:
            dropout_rows(p, l, rows, 1, False, X)
        if p.bn[l]:
            norm_rows(p, l, rows, False, X)
        backward_layer(p, l, X, m, act)
    reg = p.seg_reg_m if p.per_row else p.seg_reg
    for s in range(p.nseg):
        l1, l2x2 = <floating>reg[2 * s], <floating>(2 * reg[2 * s + 1])
        if l1 == 0 and l2x2 == 0:
            continue
        for i in range(p.seg[2 * s], p.seg[2 * s + 1]):
            g[i] += l2x2 * w[i] + (l1 if w[i] > 0 else (-l1 if w[i] < 0 else 0))
    return loss


def loss_grad(Plan p, X, Y, labels):
    """The loss of all rows of X (one batch: at most the plan's capacity; with the penalty) and
    its full gradient in the plan's grads buffer (the penalty's included), parameters
    unchanged: one compiled pass, for full-batch optimizers such as L-BFGS."""
    cdef Py_ssize_t n = epoch_rows(p, X, Y, labels, X.shape[0] if isinstance(X, np.ndarray)
                                   else 0)
    cdef void* px = _ptr(X)
    cdef void* py = _ptr(Y) if Y is not None else NULL
    cdef int64_t* pl = <int64_t*>_ptr(labels) if labels is not None else NULL
    cdef double loss
    cdef unsigned int csr
    if p.c.has_post and any(p.c.drop_rate[l] > 0 for l in range(p.c.n_layers + 1)):
        raise ValueError("loss_grad takes models without Dropout (their loss is random)")
    with nogil:
        csr = fastbp_ftz_on()
        if p.c.itemsize == 4:
            loss = c_grad_pass[float](&p.c, <float*>px, <float*>py, pl, <int>n)
        else:
            loss = c_grad_pass[double](&p.c, <double*>px, <double*>py, pl, <int>n)
        fastbp_ftz_restore(csr)
    return loss


# -- CSR inputs: the first layer's products over the stored numbers only --------------------

ctypedef struct CSRRows:
    # the whole CSR matrix, and the batch's rows: rows[r] (rows given) or start + r
    const int64_t* indptr
    const int64_t* indices
    const void* data
    const int64_t* rows
    Py_ssize_t start


cdef inline Py_ssize_t csr_row(CSRRows* s, Py_ssize_t r) noexcept nogil:
    return s.rows[r] if s.rows != NULL else s.start + r


cdef void sparse_forward0(PlanC* p, CSRRows* s, Py_ssize_t m, floating* X) noexcept nogil:
    """A = act(X·W + b) of the first layer for m CSR rows: each row of A the sum of v·W[j, :]
    over its stored (j, v) (X: for the float type)."""
    cdef Py_ssize_t r, q, j, src, n = p.n_out[0]
    cdef const floating* W = <floating*>p.W[0]
    cdef const floating* data = <const floating*>s.data
    cdef const floating* w
    cdef floating* A = <floating*>p.A[0]
    cdef floating* a
    cdef floating v
    for r in range(m):
        src = csr_row(s, r)
        a = A + r * n
        memset(a, 0, n * sizeof(floating))
        for q in range(s.indptr[src], s.indptr[src + 1]):
            v, w = data[q], W + s.indices[q] * n
            for j in range(n):
                a[j] += v * w[j]
    bias_act(A, <floating*>p.b[0], m, n, n, p.act[0], <floating>p.alpha[0])


cdef void sparse_backward0(PlanC* p, CSRRows* s, Py_ssize_t m, int act,
                           floating* X) noexcept nogil:
    """The first layer's backward for m CSR rows: dZ = dA ⊙ act'(A), db = Σ dZ, and
    dW = Xᵀ·dZ as dW[j, :] += v·dZ[r, :] over each row's stored (j, v) (no dX)."""
    cdef Py_ssize_t r, q, j, src, n = p.n_out[0], k = p.n_in[0]
    cdef floating* dZ = <floating*>p.dA[0]
    cdef floating* dW = <floating*>p.dW[0]
    cdef const floating* data = <const floating*>s.data
    cdef const floating* z
    cdef floating* g
    cdef floating v
    act_backward_db(<floating*>p.A[0], dZ, <floating*>p.db[0], m, n, n, act,
                    <floating>p.alpha[0])
    memset(dW, 0, k * n * sizeof(floating))
    for r in range(m):
        src, z = csr_row(s, r), dZ + r * n
        for q in range(s.indptr[src], s.indptr[src + 1]):
            v, g = data[q], dW + s.indices[q] * n
            for j in range(n):
                g[j] += v * z[j]


cdef double c_train_step_sparse(PlanC* p, CSRRows* s, const floating* Y,
                                const int64_t* labels, int m, double t, bint count,
                                Py_ssize_t* correct) noexcept nogil:
    """c_train_step for a batch of CSR rows (the first layer through sparse_forward0 and
    sparse_backward0, the others as c_train_step runs them)."""
    cdef int l, L = p.n_layers, act
    cdef floating* X = <floating*>p.A[0]  # (for the float type; layers above 0 ignore it)
    cdef double loss
    if p.per_row:
        penalty_rows(p, m)
    sparse_forward0(p, s, m, X)
    if p.bn[0]:
        norm_rows(p, 0, m, True, X)
    if p.drop_rate[0] > 0:
        dropout_rows(p, 0, m, t, True, X)
    for l in range(1, L):
        forward_layer(p, l, X, m, t, True)
    loss = train_loss(p, layer_out(p, L - 1, X), Y, labels, layer_dout(p, L - 1, X), m, count,
                      correct)
    for l in range(L - 1, -1, -1):
        act = LINEAR if (p.fused and l == L - 1) else p.act[l]
        if p.drop_rate[l] > 0:
            dropout_rows(p, l, m, t, False, X)
        if p.bn[l]:
            norm_rows(p, l, m, False, X)
        if l > 0:
            backward_layer(p, l, X, m, act)
        else:
            sparse_backward0(p, s, m, act, X)
    c_optimizer_step(p.opt_kind, <floating*>p.params, <floating*>p.grads, <floating*>p.s0,
                     <floating*>p.s1, p.hyper, t, p.seg,
                     p.seg_reg_m if p.per_row else p.seg_reg, p.nseg)
    return loss


cdef double c_train_epoch_sparse(PlanC* p, CSRRows* s, const floating* Y,
                                 const int64_t* labels, const int64_t* order, Py_ssize_t n,
                                 Py_ssize_t bs, floating* Yb, int64_t* Lb, double t,
                                 bint count, Py_ssize_t* correct) noexcept nogil:
    """c_train_epoch for CSR inputs: the batch's rows read in place (through ``order``), its
    targets gathered into Yb/Lb where there is an order."""
    cdef Py_ssize_t start = 0, m, r, src, o = p.y_width
    cdef double total = 0, loss
    cdef const floating* yb
    cdef const int64_t* lb
    while start < n:
        m = min(bs, n - start)
        s.rows = order + start if order != NULL else NULL
        s.start = start
        yb, lb = NULL, NULL
        if order != NULL:
            for r in range(m):
                src = order[start + r]
                if labels != NULL:
                    Lb[r] = labels[src]
                else:
                    memcpy(Yb + r * o, Y + src * o, o * sizeof(floating))
            yb, lb = Yb, Lb
        else:
            yb = Y + start * o if Y != NULL else NULL
            lb = labels + start if labels != NULL else NULL
        t += 1
        loss = c_train_step_sparse(p, s, yb, lb, <int>m, t, count, correct)
        total = add_rows(total, loss, m)
        start += bs
        p.steps_run += 1
        if p.stop_nonfinite and not isfinite(loss):
            p.nonfinite = True
            break
        if watch_signals(&p.watch):
            break
    return total


cdef int csr_parts(Plan p, indptr, indices, data, CSRRows* s) except -1:
    """Check a CSR matrix (indptr (n+1,), indices, data int64/int64/the plan's dtype) against
    the plan; the number of rows."""
    if not p.c.sparse_in:
        raise ValueError("this plan takes dense inputs (built without sparse_inputs)")
    dtype = F32 if p.c.itemsize == 4 else F64
    cdef Py_ssize_t n = indptr.shape[0] - 1 if isinstance(indptr, np.ndarray) else -1
    if n < 1:
        raise ValueError("indptr must be a 1-D array of n_rows + 1 >= 2 offsets")
    _need(indptr, "indptr", I64, (n + 1,))
    nnz = indices.shape[0] if isinstance(indices, np.ndarray) else -1
    _need(indices, "indices", I64, (nnz,))
    _need(data, "data", dtype, (nnz,))
    if indptr[0] != 0 or indptr[n] != nnz or (np.diff(indptr) < 0).any():
        raise ValueError(f"indptr must rise from 0 to nnz = {nnz}")
    if nnz and first_outside(indices, p.c.n_inputs) >= 0:
        raise ValueError(f"indices must be column numbers in [0, {p.c.n_inputs})")
    s.indptr, s.indices, s.data = <int64_t*>_ptr(indptr), <int64_t*>_ptr(indices), _ptr(data)
    s.rows, s.start = NULL, 0
    return n


def train_epochs_sparse(Plan p, indptr, indices, data, Y, labels, orders, Py_ssize_t epochs,
                        Py_ssize_t batch_size, double t, bint count):
    """train_epochs for CSR inputs (indptr, indices, data of an (n, n_inputs) matrix), each
    epoch in the order ``orders[e]`` ((epochs, n) int64) or the stored one (orders None).
    Returns (totals, corrects, t after) as train_epochs."""
    cdef CSRRows s
    cdef Py_ssize_t n = csr_parts(p, indptr, indices, data, &s), e
    _targets(p, Y, labels, n)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not 1 <= batch_size <= p.c.capacity:
        raise ValueError(f"batch_size must be in [1, {p.c.capacity}], got {batch_size}")
    if orders is not None:
        _need(orders, "orders", I64, (epochs, n))
        if first_outside(orders.reshape(-1), n) >= 0:
            raise ValueError(f"orders must hold row indices in [0, {n})")
    dtype = F32 if p.c.itemsize == 4 else F64
    Yb = np.empty((batch_size, p.c.y_width), dtype) if Y is not None else None
    Lb = np.empty(batch_size, np.int64) if labels is not None else None
    totals, corrects = np.zeros(epochs), np.zeros(epochs, np.int64)
    cdef double[::1] tot = totals
    cdef int64_t[::1] cor = corrects
    cdef void* py = _ptr(Y) if Y is not None else NULL
    cdef int64_t* pl = <int64_t*>_ptr(labels) if labels is not None else NULL
    cdef void* pyb = _ptr(Yb) if Yb is not None else NULL
    cdef int64_t* plb = <int64_t*>_ptr(Lb) if Lb is not None else NULL
    cdef int64_t* po = <int64_t*>_ptr(orders) if orders is not None else NULL
    cdef Py_ssize_t correct, steps = (n + batch_size - 1) // batch_size, done = 0
    cdef unsigned int csr
    start_call(&p.c)
    with nogil:
        csr = fastbp_ftz_on()
        for e in range(epochs):
            correct = 0
            if p.c.itemsize == 4:
                tot[e] = c_train_epoch_sparse[float](
                    &p.c, &s, <float*>py, pl, po + e * n if po != NULL else NULL, n,
                    batch_size, <float*>pyb, plb, t + p.c.steps_run, count, &correct)
            else:
                tot[e] = c_train_epoch_sparse[double](
                    &p.c, &s, <double*>py, pl, po + e * n if po != NULL else NULL, n,
                    batch_size, <double*>pyb, plb, t + p.c.steps_run, count, &correct)
            cor[e] = correct
            if epoch_ended(&p.c, e, steps, &done):
                break
        fastbp_ftz_restore(csr)
    p.raise_pending((totals[:done], corrects[:done], t + p.c.steps_run))
    return totals[:done], corrects[:done], t + p.c.steps_run


cdef void c_infer_sparse(PlanC* p, CSRRows* s, floating* out, Py_ssize_t n,
                         Py_ssize_t bs) noexcept nogil:
    """The inference forward pass of CSR rows [0, n) in batches of bs into out."""
    cdef Py_ssize_t start = 0, m
    cdef int l, L = p.n_layers
    cdef floating* X = <floating*>p.A[0]
    while start < n:
        m = min(bs, n - start)
        s.rows, s.start = NULL, start
        sparse_forward0(p, s, m, X)
        if p.bn[0]:
            norm_rows(p, 0, m, True, X, False)
        for l in range(1, L):
            forward_layer(p, l, X, <int>m, 0, False)
        memcpy(out + start * p.y_width, layer_out(p, L - 1, X, False),
               m * p.y_width * sizeof(floating))
        start += bs
        if watch_signals(&p.watch):
            break


def infer_sparse(Plan p, indptr, indices, data, out, Py_ssize_t batch_size):
    """Outputs of the inference forward pass for CSR inputs into out (n, outputs)."""
    cdef CSRRows s
    cdef Py_ssize_t n = csr_parts(p, indptr, indices, data, &s)
    dtype = F32 if p.c.itemsize == 4 else F64
    _need(out, "out", dtype, (n, p.c.y_width), True)
    if not 1 <= batch_size <= p.c.capacity:
        raise ValueError(f"batch_size must be in [1, {p.c.capacity}], got {batch_size}")
    cdef void* po = _ptr(out)
    cdef unsigned int csr
    watch_start(&p.c.watch)
    with nogil:
        csr = fastbp_ftz_on()
        if p.c.itemsize == 4:
            c_infer_sparse[float](&p.c, &s, <float*>po, n, batch_size)
        else:
            c_infer_sparse[double](&p.c, &s, <double*>po, n, batch_size)
        fastbp_ftz_restore(csr)
    p.raise_pending(None)


def regularization_loss(floating[::1] params, const int64_t[:, ::1] segments,
                        const double[:, ::1] coef):
    """Σ over segments [start, end) of l1·Σ|p| + l2·Σp² (coef rows are (l1, l2))."""
    cdef Py_ssize_t s, n = params.shape[0], k = segments.shape[0]
    if segments.shape[1] != 2 or (coef.shape[0], coef.shape[1]) != (k, 2):
        raise ValueError("segments and coef must both have shape (k, 2)")
    for s in range(k):
        if not 0 <= segments[s, 0] <= segments[s, 1] <= n:
            raise ValueError(f"segments[{s}] is outside [0, {n}]")
    cdef double out = 0
    if k == 0 or n == 0:
        return out
    with nogil:
        out = c_regularization(&params[0], &segments[0, 0], &coef[0, 0], k)
    return out


def all_finite(const floating[:, ::1] X):
    """True when no element of X is NaN or ±inf (one pass, no temporary array)."""
    cdef Py_ssize_t i, n = X.shape[0] * X.shape[1]
    cdef const floating* x
    cdef bint bad = False
    if n == 0:
        return True
    x = &X[0, 0]
    with nogil:
        for i in range(n):
            bad |= not (x[i] - x[i] == 0)  # x - x is NaN exactly for NaN and ±inf
    return not bad
