"""Audio decoding, the data sets (TFDS builders written as ArrayRecord) and the input pipeline."""

# --- audio decoding and the embedded default data set `synth` ---

# --- MagnaTagATune, your own folder, and the input pipeline ---
