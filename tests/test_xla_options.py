"""tagjax.xla_options: the compiler options of tagjax's models, checked against a float64
NumPy convolution and against what XLA compiles."""

import re

import jax
import numpy as np
import pytest
from jax import lax

from tagjax import xla_options


def _conv(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _numpy_conv(x, kernel):
    """'SAME' 3 x 3 cross-correlation in float64, tap by tap."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    _, height, width, _ = x.shape
    return sum(padded[:, i:i + height, j:j + width, :] @ kernel[i, j]
               for i in range(3) for j in range(3))


@pytest.fixture
def fresh_options():
    xla_options.compiler_options.cache_clear()
    yield
    xla_options.compiler_options.cache_clear()


def test_convolution_under_the_options_is_numpys():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 20, 12, 32)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    ours = np.asarray(xla_options.jit(_conv)(x, kernel))
    reference = _numpy_conv(x.astype(np.float64), kernel.astype(np.float64))
    # Each output is a sum of 9 * 32 = 288 products rounded to float32: any summation order
    # errs by at most 288 * eps * sum |x| |k| (a first-order bound), per output.
    bound = 288 * np.finfo(np.float32).eps * _numpy_conv(np.abs(x).astype(np.float64),
                                                         np.abs(kernel).astype(np.float64))
    assert np.all(np.abs(ours - reference) <= bound)


def test_convolutions_leave_ynnpack_on_cpu(fresh_options):
    options = xla_options.compiler_options()
    if jax.default_backend() != "cpu":
        assert options == {}
        return
    # A convolution jaxlib 0.10's defaults give YNNPACK (at 4 channels they do not).
    x = np.zeros((2, 8, 8, 32), np.float32)
    kernel = np.zeros((3, 3, 32, 32), np.float32)
    default_hlo = jax.jit(_conv).lower(x, kernel).compile().as_text()
    hlo = xla_options.jit(_conv).lower(x, kernel).compile().as_text()

    def convolutions_in_ynnpack(text):
        ynn_computations = set(re.findall(r'calls=(%[\w.\-]+)[^\n]*"__ynn_fusion"', text))
        return sum(block.count(" convolution(") for block in re.split(r"\n(?=%|ENTRY)", text)
                   if block.split(" ", 1)[0] in ynn_computations)

    if options:  # this jaxlib knows the option: the convolution is XLA's own
        assert convolutions_in_ynnpack(hlo) == 0
        assert " convolution(" in hlo
    else:  # it does not: its defaults, whatever they are
        assert hlo == default_hlo


def test_options_a_jaxlib_rejects_give_its_defaults(fresh_options, monkeypatch):
    monkeypatch.setattr(xla_options, "_CPU_OPTIONS",
                        {"xla_cpu_experimental_ynn_fusion_type": "NOT_A_FUSION_TYPE"})
    assert xla_options.compiler_options() == {}
    assert float(xla_options.jit(lambda x: 2 * x)(3.0)) == 6.0
