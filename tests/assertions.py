"""Assertions shared by the feature tests."""

import numpy as np


def assert_close_to_peak(actual, expected, tol):
    """`actual` equals `expected` within `tol` times the reference's peak magnitude."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    peak = np.abs(expected).max()
    error = np.abs(actual - expected).max()
    assert error <= tol * peak, f"max error {error:.3g} > {tol:g} x peak {peak:.3g}"
