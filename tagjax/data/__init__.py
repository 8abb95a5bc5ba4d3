"""Audio decoding, the data sets (TFDS builders written as ArrayRecord) and the input pipeline."""

# --- audio decoding and the embedded default data set `synth` ---
from tagjax.data import synth as synth
from tagjax.data import synth_builder as synth_builder
from tagjax.data.audio import AudioDecodeError as AudioDecodeError
from tagjax.data.audio import load_audio as load_audio

# --- MagnaTagATune, your own folder, and the input pipeline ---
from tagjax.data.pipeline import EvalLoader as EvalLoader
from tagjax.data.pipeline import chunk_starts as chunk_starts
from tagjax.data.pipeline import eval_loader as eval_loader
from tagjax.data.pipeline import train_loader as train_loader
from tagjax.data.registry import get_builder as get_builder
from tagjax.data.registry import get_source as get_source
