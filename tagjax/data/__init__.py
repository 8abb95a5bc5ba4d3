"""Audio decoding, the data sets (TFDS builders written as ArrayRecord) and the input pipeline.

Only audio decoding is imported eagerly; the data sets and the input pipeline (which pull in
tensorflow-datasets, grain, pretty_midi and the synthesiser) load on first use, so tagging a
file needs none of them.
"""

import importlib

# --- audio decoding ---
from tagjax.data.audio import AudioDecodeError as AudioDecodeError
from tagjax.data.audio import load_audio as load_audio
from tagjax.data.audio import stream_audio as stream_audio

# --- the embedded default data set `synth`, MagnaTagATune, your own folder, the pipeline ---
_LAZY_SUBMODULES = ("synth", "synth_builder")
_LAZY_ATTRIBUTES = {
    "EvalLoader": "tagjax.data.pipeline",
    "evenly_spaced_starts": "tagjax.chunking",
    "eval_loader": "tagjax.data.pipeline",
    "train_loader": "tagjax.data.pipeline",
    "get_builder": "tagjax.data.registry",
    "get_source": "tagjax.data.registry",
}


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"tagjax.data.{name}")
    if name in _LAZY_ATTRIBUTES:
        return getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
    raise AttributeError(f"module 'tagjax.data' has no attribute {name!r}")


__all__ = ["AudioDecodeError", "load_audio", "stream_audio", *_LAZY_SUBMODULES, *_LAZY_ATTRIBUTES]
