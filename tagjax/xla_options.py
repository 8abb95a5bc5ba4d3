"""The XLA compiler options of tagjax's compiled models: on CPU, convolutions by XLA's own
multithreaded emitter rather than YNNPACK.

jaxlib's CPU backend hands each convolution to YNNPACK by default (the library fusion types
`REDUCE`, `INDIVIDUAL_DOT` and `INDIVIDUAL_CONVOLUTION`), and YNNPACK ran the models'
convolutions on one core of two; without `INDIVIDUAL_CONVOLUTION`, XLA's own (Eigen)
convolution uses both. Measured on a 2-core AMD EPYC (family 25, AVX-512; jax 0.10.2, under
mimalloc): `cnn_lstm`'s `conv1` forward (16 x 94 x 24 x 32 -> 32) 6.9 -> 3.7 ms; training steps
(with `layers.conv`'s per-tap kernel gradients of the time), both compilations in one process,
six alternated rounds (medians): `cnn_lstm` 76.0 -> 71.4 ms, `fcn` 332.5 -> 301.9, `crnn`
385.0 -> 360.5, `short_res` 1810 -> 1699; `mfcc_lstm` and `musicnn_lstm` within 1%. The
matrix products stay with YNNPACK: without it they ran at half the speed (`mfcc_lstm`'s step
54 -> 110 ms).

The option names enum values of this jaxlib; a jaxlib that does not know them compiles with its
defaults (`compiler_options` probes once). Other backends get no options.
"""

import functools
from collections.abc import Callable

import jax

# jaxlib's default YNNPACK fusion types less INDIVIDUAL_CONVOLUTION (the default list was read
# off the compiled HLO: these three give the default's program exactly, for every config).
_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type":
                "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@functools.cache
def compiler_options() -> dict[str, str]:
    """`jax.jit`'s `compiler_options` for tagjax's models on the default backend: `{}` on
    accelerators, and on a CPU whose jaxlib rejects the options."""
    if jax.default_backend() != "cpu":
        return {}
    try:
        jax.jit(lambda x: x + 1, compiler_options=_CPU_OPTIONS).lower(1.0).compile()
    except jax.errors.JaxRuntimeError:
        return {}
    return dict(_CPU_OPTIONS)


def jit(fn: Callable, **jit_kwargs) -> Callable:
    """`jax.jit(fn, **jit_kwargs)` compiled with `compiler_options()`: how tagjax compiles a
    model's forward pass or training step, and how to compile your own around its models."""
    return jax.jit(fn, compiler_options=compiler_options(), **jit_kwargs)
