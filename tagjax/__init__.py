"""tagjax: accelerator-first music auto-tagging in JAX.

`import tagjax as tj`; then `tj.features` (pure DSP and statistics), `tj.models` (Flax modules),
`tj.data` (audio I/O and data sets) and `tj.Tagger` (inference on your own files). Each loads
on first use: `features` pulls in JAX, `data` tensorflow-datasets and `models` Flax, and the
command lines answer `--help` (and refuse a mistake) without them.
"""

import importlib
import sys

from tagjax import allocator

__version__ = "0.1.0"

# A command starts under its memory allocator (tagjax/allocator.py), before importing JAX.
if allocator.is_a_tagjax_command(sys.orig_argv):
    allocator.reexecute()

_LAZY_SUBMODULES = ("features", "data", "models", "metrics")
_LAZY_ATTRIBUTES = {"Tagger": "tagjax.tag"}


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"tagjax.{name}")
    if name in _LAZY_ATTRIBUTES:
        return getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
    raise AttributeError(f"module 'tagjax' has no attribute {name!r}")


__all__ = ["Tagger", "__version__", "data", "features", "metrics", "models"]
