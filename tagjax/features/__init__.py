"""Pure, jit-able, vmap-able and differentiable feature functions.

Arrays are time-major: a signal is `(..., samples)`, a spectrogram `(..., frames, bins)`.
Implementations live in one module per idea and are re-exported here.

Non-finite input (NaN or +-inf samples, spectra or envelopes) never yields clean-looking
numbers. Called on concrete arrays, every function that takes a signal, a spectrogram or an
envelope raises `ValueError` ("x is not finite everywhere: ..."), as librosa's
`util.valid_audio` does. Inside a caller's `jit`, `vmap` or `grad` the values are not known:
there NaN and infinities propagate to the output (at least to the frames computed from a bad
sample; a maximum over frames or bands may leave the others finite), never replaced by zeros:
check `jnp.isfinite` on the output if the input may hold them.
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
from tagjax.features.mel import log_melspectrogram as log_melspectrogram
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
# isort: split
from tagjax.features.bag_of_frames import bag_of_frames as bag_of_frames
from tagjax.features.kmeans import KMeans as KMeans
from tagjax.features.kmeans import MiniBatchKMeansState as MiniBatchKMeansState
from tagjax.features.kmeans import kmeans_assign as kmeans_assign
from tagjax.features.kmeans import kmeans_fit as kmeans_fit
from tagjax.features.kmeans import kmeans_inertia as kmeans_inertia
from tagjax.features.kmeans import kmeans_plusplus as kmeans_plusplus
from tagjax.features.kmeans import minibatch_kmeans_fit as minibatch_kmeans_fit
from tagjax.features.kmeans import minibatch_kmeans_init as minibatch_kmeans_init
from tagjax.features.kmeans import minibatch_kmeans_update as minibatch_kmeans_update
from tagjax.features.pca import PCA as PCA
from tagjax.features.pca import PCAStatistics as PCAStatistics
from tagjax.features.pca import pca_fit as pca_fit
from tagjax.features.pca import pca_from_statistics as pca_from_statistics
from tagjax.features.pca import pca_inverse_transform as pca_inverse_transform
from tagjax.features.pca import pca_statistics_init as pca_statistics_init
from tagjax.features.pca import pca_statistics_merge as pca_statistics_merge
from tagjax.features.pca import pca_statistics_update as pca_statistics_update
from tagjax.features.pca import pca_transform as pca_transform
