"""Power and amplitude to decibels, with the `top_db` floor taken per example."""

import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp

from tagjax.features import _validation

Reference = float | jax.Array | Callable[..., jax.Array]


def _example_axes(ndim: int) -> tuple[int, ...]:
    # One example is the trailing (frames, bins) matrix; anything before it is batch.
    return tuple(range(-min(ndim, 2), 0))


def _reference_value(magnitude: jax.Array, ref: Reference) -> jax.Array:
    if callable(ref):
        return ref(magnitude, axis=_example_axes(magnitude.ndim), keepdims=True)
    if isinstance(ref, bool) or not isinstance(ref, numbers.Real | jax.Array):
        raise TypeError(f"ref must be a number, an array or a callable, got {type(ref).__name__}")
    return jnp.abs(jnp.asarray(ref, magnitude.dtype))


def _check_db_args(amin, top_db) -> tuple[float, float | None]:
    amin = _validation.positive_float(amin, "amin")
    if top_db is not None:
        top_db = _validation.non_negative_float(top_db, "top_db")
    return amin, top_db


def _power_to_db(power, ref_value, amin, top_db):
    log_spec = 10.0 * jnp.log10(jnp.maximum(amin, power))
    log_spec = log_spec - 10.0 * jnp.log10(jnp.maximum(amin, ref_value))
    if top_db is not None:
        peak = jnp.max(log_spec, axis=_example_axes(log_spec.ndim), keepdims=True)
        log_spec = jnp.maximum(log_spec, peak - top_db)
    return log_spec


def power_to_db(S: jax.Array, ref: Reference = 1.0, amin: float = 1e-10,
                top_db: float | None = 80.0) -> jax.Array:
    """`10 log10(max(amin, S) / ref)`, floored at `top_db` below each example's peak.

    Args:
      S: real power spectrogram `(..., frames, bins)`.
      ref: reference power: a number, an array broadcastable to `S`, or a callable such as
        `jnp.max`, called as `ref(S, axis=(-2, -1), keepdims=True)` so it sees one example.
      amin: floor on `S` and `ref` before the logarithm (> 0).
      top_db: floor the result at `top_db` dB below the peak of its own `(frames, bins)` matrix
        (never across the batch, unlike `librosa.power_to_db` on a stacked batch); None: no floor.

    Returns:
      dB values shaped like `S`.
    """
    S = _validation.real_signal(S, "S (a power spectrogram; take jnp.abs(.) ** 2 of an STFT)")
    amin, top_db = _check_db_args(amin, top_db)
    return _power_to_db(S, _reference_value(S, ref), amin, top_db)


def amplitude_to_db(S: jax.Array, ref: Reference = 1.0, amin: float = 1e-5,
                    top_db: float | None = 80.0) -> jax.Array:
    """`20 log10(max(amin, |S|) / ref)`, floored at `top_db` below each example's peak.

    Args:
      S: magnitude spectrogram `(..., frames, bins)`; complex input (an STFT) is taken as `|S|`.
      ref: reference amplitude (number, array or callable on `|S|`, as in `power_to_db`).
      amin: floor on `|S|` and `ref` (> 0).
      top_db: as in `power_to_db`.

    Returns:
      dB values, real, shaped like `S`.
    """
    if jnp.iscomplexobj(S):
        S = jnp.abs(S)
    magnitude = jnp.abs(_validation.real_signal(S, "S"))
    amin, top_db = _check_db_args(amin, top_db)
    ref_value = _reference_value(magnitude, ref)
    return _power_to_db(jnp.square(magnitude), jnp.square(ref_value), amin**2, top_db)
