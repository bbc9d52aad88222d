"""The compiled CPU backend (default): Cython kernels, GEMMs through SciPy's BLAS."""

from fastbp._ckernels import (  # noqa: F401  (re-exported: this module is the backend)
    Plan,
    batchnorm_backward,
    batchnorm_forward,
    count_correct,
    count_correct_sparse,
    dense_backward,
    dense_forward,
    dropout_backward,
    dropout_forward,
    gru_backward,
    gru_forward,
    infer,
    infer_sparse,
    loss,
    loss_grad,
    loss_sparse,
    lstm_backward,
    lstm_forward,
    optimizer_step,
    regularization_loss,
    rnn_backward,
    rnn_forward,
    train_epoch,
    train_epochs,
    train_epochs_sparse,
    train_step,
)

name = "cython"

from .reference import batchnorm_backward_frozen  # noqa: E402, F401  (host NumPy, no kernel needed)
