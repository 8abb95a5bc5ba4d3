"""Input checks shared by the feature functions, run at trace time so errors name the argument."""

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PAD_MODES = ("constant", "edge", "reflect", "symmetric", "linear_ramp")


def real_signal(x: Any, name: str = "x", min_ndim: int = 1) -> jax.Array:
    """Returns `x` as a JAX array of real floating dtype, or raises.

    Half precision is promoted to float32 because the FFT has no half-precision kernel. Values
    are checked with `finite` (concrete input only: see the package's policy on NaN).

    Raises:
      TypeError: `x` is not array-like, or holds integers, booleans or complex numbers.
      ValueError: `x` has fewer than `min_ndim` axes, or is concrete and not finite everywhere.
    """
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        try:
            x = np.asarray(x)
        except Exception as e:  # ragged lists and arbitrary objects
            raise TypeError(
                f"{name} must be an array of real floats, got {type(x).__name__}") from e
        dtype = x.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        hint = " (divide integer PCM by its full scale, e.g. 32768.0)" if jnp.issubdtype(
            dtype, jnp.integer) else ""
        raise TypeError(f"{name} must hold real floating-point values, got dtype {dtype}{hint}")
    x = jnp.asarray(x)
    if x.dtype in (jnp.float16, jnp.bfloat16):
        x = x.astype(jnp.float32)
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} axes, got shape {x.shape}")
    finite(x, name)
    return x


@jax.jit
def _all_finite(x: jax.Array) -> jax.Array:
    return jnp.all(jnp.isfinite(x))


def finite(x: jax.Array, name: str = "x") -> None:
    """Raises `ValueError` if a concrete `x` holds NaN or infinite values, as librosa's
    `util.valid_audio` does ("Audio buffer is not finite everywhere").

    A tracer (inside the caller's `jit`, `vmap` or `grad`) has no values to check: there the
    feature functions let NaN and infinities propagate to their output instead (see the package
    docstring).
    """
    if isinstance(x, jax.core.Tracer):
        return
    # A concrete array met while the caller traces (a constant in its jit) is checked now.
    with jax.ensure_compile_time_eval():
        if bool(_all_finite(x)):
            return
    bad = np.flatnonzero(~np.isfinite(np.asarray(x)))
    position = np.unravel_index(bad[0], x.shape)
    raise ValueError(f"{name} is not finite everywhere: {bad.size} of {x.size} values are NaN "
                     f"or infinite (the first at index {tuple(map(int, position))})")


def positive_int(value: Any, name: str) -> int:
    """Returns `value` as an int if it is a positive integer (not a bool); else ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def positive_float(value: Any, name: str) -> float:
    """Returns `value` as a float if it is a finite positive real number, else raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


def non_negative_float(value: Any, name: str) -> float:
    """Returns `value` as a float if it is a finite number >= 0, else raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            np.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def choice(value: Any, name: str, choices: tuple) -> Any:
    """Returns `value` if it is one of `choices`, else raises ValueError listing them."""
    if not any(value is c or (type(value) is type(c) and value == c) for c in choices):
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def pad_mode(value: Any) -> str:
    """Checks a `pad_mode` for centred framing (librosa's modes that `jnp.pad` supports)."""
    return choice(value, "pad_mode", PAD_MODES)


def frequency_range(sr: float, fmin: Any, fmax: Any) -> tuple[float, float]:
    """Checks `0 <= fmin < fmax <= sr / 2` (`fmax=None` means `sr / 2`) and returns both."""
    nyquist = sr / 2
    fmin = non_negative_float(fmin, "fmin")
    fmax = nyquist if fmax is None else positive_float(fmax, "fmax")
    if fmax > nyquist:
        raise ValueError(f"fmax={fmax} must not exceed the Nyquist frequency sr / 2 = {nyquist}")
    if fmin >= fmax:
        raise ValueError(f"fmin={fmin} must be below fmax={fmax}")
    return fmin, fmax


def norm_order(value: Any, name: str = "norm") -> float | None:
    """Checks a vector norm order as librosa's `util.normalize`: None, inf, -inf or p > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            value > 0 or np.isneginf(value)):
        raise ValueError(
            f"{name} must be None, np.inf, -np.inf or a positive number, got {value!r}")
    return float(value)
