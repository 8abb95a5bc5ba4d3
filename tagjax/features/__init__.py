"""Pure, jit-able, vmap-able and differentiable feature functions.

Arrays are time-major: a signal is `(..., samples)`, a spectrogram `(..., frames, bins)`.
Implementations live in one module per idea and are re-exported here.
"""

# --- spectral core: framing, STFT/DFT, mel, dB, DCT/MFCC, chroma, onset/tempogram ---

# --- statistics: PCA, k-means, bag-of-frames ---
