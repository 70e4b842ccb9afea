"""The one way randomness enters fastten: a numpy Generator from the caller."""

import numbers

import numpy as np


def check_random_state(random_state, name="random_state", stream=0):
    """A ``numpy.random.Generator`` from None (fresh entropy), an int seed, or a Generator.

    A Generator is used as is (not copied), so a caller who passes one sees it
    advance; an int gives the same stream every time, ``default_rng(seed)``
    for ``stream=0`` and an independent one, spawned from the same seed, for
    each other value of ``stream``.
    """
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, (bool, np.bool_)):
        if random_state < 0:
            raise ValueError(f"{name}: expected a non-negative integer seed, got {random_state}")
        if stream:
            return np.random.default_rng(np.random.SeedSequence(int(random_state), spawn_key=(stream,)))
        return np.random.default_rng(int(random_state))
    raise TypeError(
        f"{name}: expected None, a non-negative int or a numpy.random.Generator, "
        f"got {random_state!r} of type {type(random_state).__name__}"
    )
