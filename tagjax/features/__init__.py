"""Pure, jit-able, vmap-able and differentiable feature functions.

Arrays are time-major: a signal is `(..., samples)`, a spectrogram `(..., frames, bins)`.
Implementations live in one module per idea and are re-exported here.
"""

# --- spectral core: framing, STFT/DFT, mel, dB, DCT/MFCC, chroma, onset/tempogram ---
from tagjax.features.cepstral import dct as dct
from tagjax.features.cepstral import mfcc as mfcc
from tagjax.features.cepstral import mfcc_from_db as mfcc_from_db
from tagjax.features.chroma import chroma as chroma
from tagjax.features.chroma import chroma_filterbank as chroma_filterbank
from tagjax.features.decibels import amplitude_to_db as amplitude_to_db
from tagjax.features.decibels import power_to_db as power_to_db
from tagjax.features.mel import fft_frequencies as fft_frequencies
from tagjax.features.mel import hz_to_mel as hz_to_mel
from tagjax.features.mel import mel_filterbank as mel_filterbank
from tagjax.features.mel import mel_frequencies as mel_frequencies
from tagjax.features.mel import mel_to_hz as mel_to_hz
from tagjax.features.mel import melspectrogram as melspectrogram
from tagjax.features.rhythm import onset_strength as onset_strength
from tagjax.features.rhythm import tempogram as tempogram
from tagjax.features.rhythm import tempogram_from_onset as tempogram_from_onset
from tagjax.features.spectral import frame as frame
from tagjax.features.spectral import get_window as get_window
from tagjax.features.spectral import num_frames as num_frames
from tagjax.features.spectral import spectrogram as spectrogram
from tagjax.features.spectral import stft as stft

# --- statistics: PCA, k-means, bag-of-frames ---
