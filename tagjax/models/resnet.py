"""Won et al. 2020's short-chunk ResNet: a 3.69 s log-mel chunk -> a clip vector.

M. Won, A. Ferraro, D. Bogdanov, X. Serra, "Evaluation of CNN-based automatic music tagging
models", SMC 2020; the released `ShortChunkCNN_Res` reached ROC-AUC 0.9129 and PR-AUC 0.4614
on MagnaTagATune. Defaults follow the released code (`sota-music-tagging-models`):
- input: 59049 samples at 16 kHz; 128-band HTK mel spectrogram without filter normalisation,
  n_fft 512, hop 256, up to 8 kHz, reflect-padded centred frames (torchaudio's
  `MelSpectrogram`), `10 log10` without a floor (`AmplitudeToDB`), one batch norm over the
  whole spectrogram (`BatchNorm2d(1)`);
- seven residual blocks of 3x3 convolutions, channels 128, 128, 256, 256, 256, 256, 512, each
  halving time and frequency with a stride-2 first convolution (the paper describes the
  downsampling as 2x2 max pooling, which `downsample="maxpool"` selects);
- a global max over what is left of time and frequency: `(batch, channels[-1])`.
The released model's dense part (512, batch norm, ReLU, dropout 0.5, num_tags) is the `mlp`
head with `hidden=512, batch_norm=True, dropout=0.5`.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from tagjax.models.frontends import LogMel
from tagjax.models.layers import BatchNorm, Conv, ConvKernel, block_max_pool, forked_conv
from tagjax.models.registry import register_frontend

DOWNSAMPLINGS = ("stride", "maxpool")

# PyTorch's padding=1 on both sides; "SAME" would pad only after the edge for stride 2.
_PAD = ((1, 1), (1, 1))


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a shortcut, then ReLU; halves time and frequency.

    The shortcut is a strided 3x3 convolution and batch norm whenever the block changes the
    shape (as in Won et al.'s `Res_2d`), the identity otherwise.

    Attributes:
      features: output channels.
      downsample: "stride" (stride-2 convolutions) or "maxpool" (stride 1, then 2x2 max pool).
      bn_momentum: decay of the batch-norm running statistics.
    """

    features: int
    downsample: str = "stride"
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x, *, train: bool):
        """`(batch, time, freq, channels)` -> `(batch, ceil(time/2), ceil(freq/2), features)`."""
        if self.downsample not in DOWNSAMPLINGS:
            raise ValueError(
                f"unknown downsample={self.downsample!r}; choose one of {', '.join(DOWNSAMPLINGS)}"
            )
        stride = 2 if self.downsample == "stride" else 1

        def norm(name):
            return BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                             name=name)

        if stride != 1 or x.shape[-1] != self.features:
            # conv1 and the shortcut read the same input through the same window: one pass.
            kernels = [ConvKernel(self.features, (3, 3), name=name)(x.shape[-1])
                       for name in ("conv1", "conv_shortcut")]
            y, x = forked_conv(x, kernels, (stride, stride), _PAD)
            x = norm("bn_shortcut")(x)
        else:
            y = Conv(self.features, (3, 3), padding=_PAD, use_bias=False, name="conv1")(x)
        y = nn.relu(norm("bn1")(y))
        y = Conv(self.features, (3, 3), padding=_PAD, use_bias=False, name="conv2")(y)
        y = norm("bn2")(y)
        y = nn.relu(x + y)
        if self.downsample == "maxpool":
            y = block_max_pool(y, (2, 2))
        return y


@register_frontend("short_chunk_resnet")
class ShortChunkResNet(LogMel):
    """Won et al.'s ShortChunkCNN_Res front end: `(batch, samples)` -> `(batch, channels[-1])`.

    Log-mel attributes as `LogMel`, with the released model's defaults (see the module
    docstring); `top_db=None` means no dB floor.

    Attributes:
      channels: output channels of each residual block.
      downsample: "stride" (released code) or "maxpool" (the paper's description).
    """

    n_mels: int = 128
    fmax: float | None = 8000.0
    htk: bool = True
    mel_norm: str | None = None
    pad_mode: str = "reflect"
    top_db: float | None = None
    normalize: str = "batchnorm_global"
    channels: Sequence[int] = (128, 128, 256, 256, 256, 256, 512)
    downsample: str = "stride"

    @nn.compact
    def __call__(self, audio, *, train: bool):
        """`(batch, samples)` -> `(batch, channels[-1])`."""
        x = self.normalized(self.log_mel(audio), train=train)[..., None]
        for i, width in enumerate(self.channels):
            x = ResidualBlock(width, downsample=self.downsample, bn_momentum=self.bn_momentum,
                              name=f"block{i}")(x, train=train)
        return jnp.max(x, axis=(1, 2))
