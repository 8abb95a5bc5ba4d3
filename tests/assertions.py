"""Assertions shared by the feature tests."""

import numpy as np


def assert_close_to_peak(actual, expected, tol):
    """`actual` equals `expected` within `tol` times the reference's peak magnitude."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    peak = np.abs(expected).max()
    error = np.abs(actual - expected).max()
    assert error <= tol * peak, f"max error {error:.3g} > {tol:g} x peak {peak:.3g}"


# float32's unit roundoff: a correctly rounded operation errs by at most this much, relatively.
UNIT_ROUNDOFF = 2.0**-24


def gamma(n_terms):
    """Higham's gamma_n = n u / (1 - n u): a float32 sum or dot product of n terms, summed in any
    order, is within gamma_n times the sum of the terms' magnitudes of its exact value (Higham,
    Accuracy and Stability of Numerical Algorithms, 2nd ed., eq. 3.5). Two orders, as XLA may
    pick under jit, vmap or another batch size (its dot kernels and their blocking depend on the
    shapes and the CPU), differ by at most twice that."""
    return n_terms * UNIT_ROUNDOFF / (1 - n_terms * UNIT_ROUNDOFF)


def assert_within(actual, expected, bound):
    """`|actual - expected| <= bound` element by element (`bound` broadcasts)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    error = np.abs(actual.astype(np.complex128 if np.iscomplexobj(actual) else np.float64)
                   - expected)
    excess = error - np.broadcast_to(bound, error.shape)
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert excess[worst] <= 0, (
        f"error {error[worst]:.3g} > bound {np.broadcast_to(bound, error.shape)[worst]:.3g} at "
        f"{worst} (value {expected[worst]:.6g})")
