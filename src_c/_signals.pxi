# Signals (Ctrl-C) during compiled loops. A loop runs without the GIL for up to minutes; Python
# runs a signal's handler (KeyboardInterrupt for SIGINT) only when it next executes bytecode in
# the main thread. So the loops call watch_signals between steps (batches): about every
# SIGNAL_NS it takes the GIL and runs the pending handlers (PyErr_CheckSignals); an exception
# they raise is kept, the loop stops at that step's end, and the wrapper raises it once the
# state (weights, optimizer, step counter) is that of the last finished step.

from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF

cdef extern from "Python.h":
    int PyErr_CheckSignals() except -1

# between two looks for signals at most this long (the KeyboardInterrupt then comes within
# this plus one step)
cdef long long SIGNAL_NS = 20000000


ctypedef struct Watch:
    long long last, due  # the clock at the last read; the next look for signals
    int stride, left  # steps between clock reads (about every 0.25-2 ms), left until the next
    PyObject* pending  # the exception a handler raised (a reference), or NULL


cdef inline void watch_start(Watch* w) noexcept nogil:
    """Before a loop: no exception kept, the first look SIGNAL_NS from now."""
    w.last = fastbp_now_ns()
    w.due = w.last + SIGNAL_NS
    w.stride, w.left, w.pending = 1, 1, NULL


cdef bint look_for_signals(Watch* w) noexcept nogil:
    """Run the pending signal handlers (with the GIL); True where one raised (kept in w)."""
    with gil:
        try:
            PyErr_CheckSignals()
        except BaseException as exc:
            if w.pending == NULL:
                Py_INCREF(exc)
                w.pending = <PyObject*>exc
    return w.pending != NULL


cdef inline bint watch_signals(Watch* w) noexcept nogil:
    """After a step: True where a handler raised (the loop then stops). The clock is read every
    ``stride`` steps, a stride kept between 0.25 and 2 ms of work (W1's sub-µs steps: one read
    per ~400 steps; steps longer than 2 ms: every step)."""
    cdef long long now, took
    if w.pending != NULL:
        return True
    w.left -= 1
    if w.left > 0:
        return False
    now = fastbp_now_ns()
    took, w.last = now - w.last, now
    if took < 250000 and w.stride < (1 << 20):
        w.stride *= 2
    elif took > 2000000 and w.stride > 1:
        w.stride //= 2
    w.left = w.stride
    if now < w.due:
        return False
    w.due = now + SIGNAL_NS
    return look_for_signals(w)


cdef object watch_pending(Watch* w):
    """The exception kept (its reference handed over), or None."""
    if w.pending == NULL:
        return None
    exc = <object>w.pending
    Py_XDECREF(w.pending)
    w.pending = NULL
    return exc
