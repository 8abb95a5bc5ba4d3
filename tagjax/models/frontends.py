"""Feature front ends: raw audio `(batch, samples)` -> frames `(batch, frames, dim)`.

The slides' `R = M C` (mel spectrogram) and `X = R V^T` (MFCC), computed inside the model with
`tj.features` so that feature extraction is jit-compiled and fused with the network.

Conventions (all keyword arguments):
- the power mel spectrogram (`power=2`, squared once; Choi et al.'s released code squared an
  already-power spectrogram a second time), compressed as `compression` says: "db" (decibels
  `10 log10(max(S, amin))` with `ref=1.0`, `amin=1e-10` and the `top_db` floor taken per
  example) or "log1p" (`log10(1 + log_gain S)`, musicnn's "logC" with `log_gain=10000`);
- the MFCC is librosa's: an orthonormal DCT-II of that dB mel spectrogram, first `n_mfcc`
  coefficients;
- `normalize` sets how the dB values are scaled for the network: "batchnorm" (batch
  normalisation of each mel bin or coefficient over the batch and frames, with a learned scale
  and offset, as Choi et al.'s input layer), "batchnorm_global" (one statistic over all bins,
  as Won et al.'s `BatchNorm2d(1)`), or "none" (plain dB). A bag-of-frames summary clusters
  these frames once and then freezes the centroids, so it wants "none" or a frozen front end:
  batch statistics that keep moving would move the frames away from the centroids.
"""

import flax.linen as nn
import jax.numpy as jnp

from tagjax import features
from tagjax.models.registry import register_frontend

NORMALIZATIONS = ("batchnorm", "batchnorm_global", "none")
COMPRESSIONS = ("db", "log1p")


@register_frontend("logmel")
class LogMel(nn.Module):
    """Log-mel spectrogram in dB: `(batch, samples)` -> `(batch, frames, n_mels)`.

    `frames = 1 + samples // hop_length` (centred frames; `1 + (samples - n_fft) // hop_length`
    with `center=False`). The mel arguments are those of `tj.features.melspectrogram`; the
    defaults follow Choi et al. at 16 kHz (96 mels, n_fft 512, hop 256) with librosa's Slaney
    mel scale and area normalisation.

    Attributes:
      sample_rate: of the input audio, in Hz.
      n_fft: FFT size (and Hann window length).
      hop_length: frame step in samples.
      n_mels: mel bands.
      fmin: lowest mel band edge, in Hz.
      fmax: highest mel band edge, in Hz (None: sample_rate / 2).
      htk: HTK mel scale instead of Slaney's.
      mel_norm: filterbank normalisation, "slaney" or None.
      center: centre frame `t` on sample `t * hop_length` (padding the ends as `pad_mode`
        says); False starts frame `t` there, so a chunk cut with `n_fft // 2` samples of the
        track on its left gives exactly the frames of the whole track's centred spectrogram.
      pad_mode: padding of the centred frames, "constant" (librosa 0.11) or "reflect".
      compression: "db" or "log1p" (see the module docstring).
      top_db: with "db": floor at `max - top_db` dB per example; None for no floor.
      log_gain: with "log1p": the gain `C` in `log10(1 + C S)`.
      normalize: "batchnorm", "batchnorm_global" or "none" (see the module docstring).
      bn_momentum: decay of the batch-norm running statistics (0.9 is PyTorch's momentum 0.1;
        TensorFlow's layers default to 0.99).
      bn_epsilon: added to the variance in batch norm (Flax and PyTorch: 1e-5; TensorFlow's
        layers: 1e-3).
    """

    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 96
    fmin: float = 0.0
    fmax: float | None = None
    htk: bool = False
    mel_norm: str | None = "slaney"
    center: bool = True
    pad_mode: str = "constant"
    compression: str = "db"
    top_db: float | None = 80.0
    log_gain: float = 10000.0
    normalize: str = "batchnorm"
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5

    def log_mel(self, audio):
        """`(batch, samples)` -> the compressed mel spectrogram `(batch, frames, n_mels)`,
        unnormalised."""
        if audio.ndim != 2:
            raise ValueError(
                f"{type(self).__name__} expects audio of shape (batch, samples), got {audio.shape}"
            )
        shortest = self.n_fft // 2 + 1 if self.center else self.n_fft
        if audio.shape[-1] < shortest:
            raise ValueError(
                f"{audio.shape[-1]} samples is too short for n_fft={self.n_fft} frames; give at "
                f"least {shortest}"
            )
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"unknown compression={self.compression!r}; choose one of "
                             f"{', '.join(COMPRESSIONS)}")
        mel_args = dict(sr=self.sample_rate, n_fft=self.n_fft, hop_length=self.hop_length,
                        n_mels=self.n_mels, fmin=self.fmin, fmax=self.fmax, htk=self.htk,
                        norm=self.mel_norm, center=self.center, pad_mode=self.pad_mode)
        if self.compression == "log1p":
            mel = features.melspectrogram(audio, power=2.0, **mel_args)
            # log1p keeps the quiet bins exact in float32, where 1 + C S would round them.
            return jnp.log1p(self.log_gain * mel) / jnp.log(10.0)
        return features.log_melspectrogram(audio, ref=1.0, amin=1e-10, top_db=self.top_db,
                                           **mel_args)

    def normalized(self, x, *, train: bool):
        """Scales dB frames `(batch, frames, bins)` for the network, as `normalize` says."""
        if self.normalize == "none":
            return x
        if self.normalize in ("batchnorm", "batchnorm_global"):
            norm = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                                epsilon=self.bn_epsilon, name="input_norm")
            return norm(x) if self.normalize == "batchnorm" else norm(x[..., None])[..., 0]
        raise ValueError(
            f"unknown normalize={self.normalize!r}; choose one of {', '.join(NORMALIZATIONS)}"
        )

    @nn.compact
    def __call__(self, audio, *, train: bool):
        """`(batch, samples)` -> `(batch, frames, n_mels)`."""
        return self.normalized(self.log_mel(audio), train=train)


@register_frontend("mfcc")
class MFCC(LogMel):
    """MFCC frames: `(batch, samples)` -> `(batch, frames, n_mfcc)`.

    librosa's definition: the orthonormal DCT-II over the mel axis of the dB mel spectrogram,
    first `n_mfcc` coefficients. The default of 90 coefficients from 96 mel bands is the
    slides' MFCC front end. Attributes as `LogMel`, plus:

    Attributes:
      n_mfcc: number of coefficients kept (at most n_mels).
    """

    n_mfcc: int = 90

    @nn.compact
    def __call__(self, audio, *, train: bool):
        """`(batch, samples)` -> `(batch, frames, n_mfcc)`."""
        cepstrum = features.mfcc_from_db(self.log_mel(audio), n_mfcc=self.n_mfcc, norm="ortho")
        return self.normalized(cepstrum, train=train)
