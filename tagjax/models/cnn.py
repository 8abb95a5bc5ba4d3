"""Choi et al. 2016's 5-layer CNN on log-mel spectrograms ("FCN"), as a clip or frame encoder.

K. Choi, G. Fazekas, M. Sandler, "Automatic tagging using deep convolutional neural networks",
ISMIR 2016. Each block is a 3x3 convolution, batch normalisation, an activation, max pooling
and (optionally) dropout. Defaults are those of the released `MusicTaggerCNN`: channels
32, 128, 128, 192, 256, ELU, pools (frequency x time) 2x4, 2x4, 2x4, 3x5, 4x4, which take a
96 x 1366 log-mel input down to 1 x 1; the input is batch-normalised per mel bin.

Two outputs:
- `output="clip"`: the FCN as published, ending in a global max over what is left of time and
  frequency: `(batch, channels[-1])`.
- `output="sequence"`: the slides' "Cnn5" feeding a bag of frames or an LSTM: by default the
  pools act on frequency only, and a max over the remaining frequency axis gives
  `(batch, frames', channels[-1])`, `frames'` = the log-mel frames divided by the product of
  the pools' time factors (rounded up).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from tagjax.models.frontends import LogMel
from tagjax.models.layers import Conv, MaxPooledBatchNorm, SingleChannelConv
from tagjax.models.registry import register_frontend

# (time, frequency) per block: our spectrograms are (frames, mels), the paper writes (mels, time).
FCN_POOLS = ((4, 2), (4, 2), (4, 2), (5, 3), (4, 4))
SEQUENCE_POOLS = ((1, 2), (1, 2), (1, 2), (1, 3), (1, 4))
OUTPUTS = ("clip", "sequence")

ACTIVATIONS = {"relu": nn.relu, "elu": nn.elu}


def activation_fn(name: str):
    """The activation function named `name` ("relu" or "elu")."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        ) from None


class ChoiCNN(LogMel):
    """Choi's 5-layer CNN over the log-mel spectrogram.

    Audio `(batch, samples)` -> `(batch, channels[-1])` (`output="clip"`) or
    `(batch, frames', channels[-1])` (`output="sequence"`). The log-mel attributes are those of
    `LogMel` (96 mels, n_fft 512, hop 256, batch norm per mel bin at the input).

    Max pooling rounds up (the edge window is padded with -inf), so any input length works;
    at the paper's 96 x 1366 input the frequency axis ends at 1 as published and the time axis
    at 2 instead of 1, which the final global max covers.

    Attributes:
      channels: output channels of each convolution block.
      pools: `(time, frequency)` max-pool window (= stride) of each block; None for the
        default of the output mode (`FCN_POOLS` or `SEQUENCE_POOLS`).
      kernel_size: `(time, frequency)` convolution kernel.
      activation: "elu" (the released code) or "relu" (the paper).
      dropout: dropout rate after each block in training (0 in the FCN).
      output: "clip" or "sequence".
    """

    channels: Sequence[int] = (32, 128, 128, 192, 256)
    pools: Sequence[Sequence[int]] | None = None
    kernel_size: Sequence[int] = (3, 3)
    activation: str = "elu"
    dropout: float = 0.0
    output: str = "clip"

    def block_pools(self) -> tuple[tuple[int, int], ...]:
        """The `(time, frequency)` pool of each block, after checking the configuration."""
        if self.output not in OUTPUTS:
            raise ValueError(f"unknown output={self.output!r}; choose one of {', '.join(OUTPUTS)}")
        if self.pools is not None:
            pools = tuple(tuple(int(p) for p in pool) for pool in self.pools)
        else:
            pools = FCN_POOLS if self.output == "clip" else SEQUENCE_POOLS
        if len(pools) != len(self.channels) or any(len(p) != 2 or min(p) < 1 for p in pools):
            raise ValueError(
                f"pools must give one (time, frequency) pair of positive sizes per block: "
                f"{len(self.channels)} channels {tuple(self.channels)} but pools {pools}"
            )
        return pools

    @nn.compact
    def __call__(self, audio, *, train: bool):
        """`(batch, samples)` -> `(batch, channels[-1])` or `(batch, frames', channels[-1])`."""
        pools = self.block_pools()
        act = activation_fn(self.activation)
        x = self.normalized(self.log_mel(audio), train=train)[..., None]
        for i, (width, pool) in enumerate(zip(self.channels, pools, strict=True)):
            # No bias: the batch norm that follows has its own offset. Flax's Conv values with
            # faster gradients on the CPU: SingleChannelConv's for the one-channel first layer,
            # Conv's (`layers.conv`) for the others.
            conv = SingleChannelConv if x.shape[-1] == 1 else Conv
            x = conv(width, tuple(self.kernel_size), padding="SAME", use_bias=False,
                     name=f"conv{i}")(x)
            # pool(act(norm(x))) as act(pooled norm(x)): the same values, since ELU and ReLU
            # are increasing, at a fraction of the cost.
            x = act(MaxPooledBatchNorm(pool, use_running_average=not train,
                                       momentum=self.bn_momentum, name=f"bn{i}")(x))
            if self.dropout:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        if self.output == "clip":
            return jnp.max(x, axis=(1, 2))
        return jnp.max(x, axis=2)


@register_frontend("fcn")
class ChoiFCN(ChoiCNN):
    """`ChoiCNN` with `output="clip"`: the FCN-5 of the paper, `(batch, channels[-1])`."""

    output: str = "clip"


@register_frontend("cnn5")
class ChoiCNNSequence(ChoiCNN):
    """`ChoiCNN` with `output="sequence"`: frames `(batch, frames', channels[-1])` for a summary."""

    output: str = "sequence"
