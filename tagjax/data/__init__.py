"""Audio decoding, the data sets (TFDS builders written as ArrayRecord) and the input pipeline."""

# --- audio decoding and the embedded default data set `synth` ---
from tagjax.data.audio import AudioDecodeError as AudioDecodeError
from tagjax.data.audio import load_audio as load_audio

# --- MagnaTagATune, your own folder, and the input pipeline ---
