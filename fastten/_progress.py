"""Progress of a fit: ``fit(..., verbose=)``.

verbose = 0 says nothing; 1 reports each stage of the fit (standardise,
tensor stage, output layer, refinement) with its time and, once there is a
network, its loss, and each refinement round and stage; 2 also reports every
accepted refinement iteration.

Where the messages go. They are INFO records of the ``fastten`` logger
when that logger would show them: it is enabled for INFO and some handler
(its own or an ancestor's) is configured. Otherwise, a user who has not
configured logging for fastten, they are formatted by a handler of this
fit's own, never attached to any logger, and written to ``sys.stderr`` (as
scikit-learn's verbose estimators print there). So verbose > 0 is always
visible and nothing global changes: no logger's handlers or level are
touched, and fits in several threads each keep their own handler.

With tqdm installed (``pip install fastten[progress]``) a bar counts the
refinement iterations on ``sys.stderr`` (loss in its postfix); on the
stderr route the messages are written through the bar so that they do not
break it. The bar is closed when the fit ends, also by an exception (a
callback's, for instance). tqdm is imported only by a fit with verbose > 0.
"""

import logging
import numbers
import sys
import time

import numpy as np

__all__ = ["check_verbose", "Progress"]

logger = logging.getLogger("fastten")

STAGES = {"standardise": "standardise", "tensor": "tensor stage", "output_layer": "output layer",
          "refine": "refinement"}


def check_verbose(verbose):
    """verbose as an int >= 0 (True is 1, False 0)."""
    if isinstance(verbose, (bool, np.bool_)):
        return int(verbose)
    if not isinstance(verbose, numbers.Integral):
        raise TypeError(f"verbose: expected an int >= 0 or a bool, got {verbose!r} of type "
                        f"{type(verbose).__name__}")
    if verbose < 0:
        raise ValueError(f"verbose: expected an int >= 0 or a bool, got {verbose!r}")
    return int(verbose)


def _bar_class():
    """tqdm's bar class, or None without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


class Progress:
    """The messages and the bar of one fit; a context manager around it.

    ``stage`` after each stage, ``begin_refinement`` before the refinement,
    ``step`` after every accepted refinement step, ``record`` after each
    refinement round and stage, ``done`` at the end. With verbose=0 every method does nothing.
    """

    def __init__(self, verbose):
        self.verbose = verbose
        self._handler = None
        self._bar = None
        self._bar_class = None
        self._iteration = 0
        self._round = 0
        self._bar_round = 0
        self._clock = None

    @property
    def active(self):
        return self.verbose > 0

    def __enter__(self):
        if self.active:
            self._clock = time.perf_counter()
            if not (logger.isEnabledFor(logging.INFO) and logger.hasHandlers()):
                self._handler = logging.StreamHandler(sys.stderr)
                self._handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            self._bar_class = _bar_class()
        return self

    def __exit__(self, kind, value, trace):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._handler is not None:
            self._handler.close()
            self._handler = None
        return False

    def _emit(self, message, *args):
        if self._handler is None:
            logger.info(message, *args)
            return
        record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, message, args, None)
        if self._bar is not None:
            self._bar.write(self._handler.format(record), file=self._handler.stream)
        else:
            self._handler.handle(record)

    def _lap(self):
        now = time.perf_counter()
        seconds, self._clock = now - self._clock, now
        return seconds

    def stage(self, name, seconds, loss=None):
        """A stage of the fit ended after ``seconds``; ``loss`` is the
        network's objective then (None before there is a network)."""
        if not self.active:
            return
        self._lap()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if loss is None:
            self._emit("fit: %s done in %.2f s", STAGES.get(name, name), seconds)
        else:
            self._emit("fit: %s done in %.2f s, loss %.4e", STAGES.get(name, name), seconds, loss)

    def done(self, seconds, loss):
        """The fit ended after ``seconds`` with training loss ``loss``."""
        if self.active:
            self._emit("fit: done in %.2f s, training loss %.4e", seconds, loss)

    def begin_refinement(self):
        """The refinement starts: open the bar (with tqdm)."""
        if not self.active:
            return
        self._lap()
        self._iteration, self._round, self._bar_round = 0, 1, 1
        if self._bar_class is not None:
            stream = self._handler.stream if self._handler is not None else sys.stderr
            self._bar = self._bar_class(desc="fastten refine, round 1", unit="it", file=stream, leave=True,
                                        dynamic_ncols=True)

    def step(self, loss):
        """An accepted refinement step; ``loss`` is its objective."""
        if not self.active:
            return
        self._iteration += 1
        if self._bar is not None:
            if self._bar_round != self._round:
                self._bar.set_description_str(f"fastten refine, round {self._round}", refresh=False)
                self._bar_round = self._round
            self._bar.set_postfix(loss=f"{loss:.4e}", refresh=False)
            self._bar.update(1)
        if self.verbose >= 2:
            self._emit("fit: refinement iteration %d (round %d): loss %.6e", self._iteration, self._round, loss)

    def record(self, kind, record, rows):
        """A refinement round (kind "round") or stage ("stage") on ``rows``
        rows ended; ``record`` is its diagnostics record
        (``fastten._rounds.refine_network``)."""
        if not self.active:
            return
        converged = "converged" if record["converged"] else "not converged"
        if kind == "round":
            self._emit("fit: refinement round %d on %d rows done in %.2f s: %d iterations, loss %.4e, %s",
                       self._round, rows, self._lap(), record["iterations"], record["loss"], converged)
            self._round += 1
        else:
            self._emit("fit: refinement stage on %d rows done: %d iterations, loss %.4e, %s", rows,
                       record["iterations"], record["loss"], converged)
