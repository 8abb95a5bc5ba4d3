"""Pons and Serra's musicnn and its VGG baseline: the taggers published in the `musicnn` package.

J. Pons, X. Serra, "musicnn: pre-trained convolutional neural networks for music audio
tagging", ISMIR 2019 (late-breaking demo); J. Pons et al., "End-to-end learning for music
audio tagging at scale", ISMIR 2018. The architectures follow the released `musicnn/models.py`
(musicnn 0.1.0, ISC licence); `tj.models.pretrained` loads their trained weights.

Input, as the released extractor computes it: 16 kHz audio, n_fft 512, hop 256, 96 Slaney mel
bands of the power spectrogram, `log10(1 + 10000 S)`, in patches of 187 frames (3 s), then one
batch norm over the whole patch. The original casts the mel spectrogram to float16 before the
log, which overflows to infinity on loud recordings (and the tags become NaN); here everything
is float32. Frames are not centred (`center=False`): a chunk of `186 * 256 + 512 = 48128`
samples that starts `256` samples before a patch's first frame gives exactly the 187 frames the
extractor cuts from its spectrogram of the whole track, edges included.

Precision: on GPUs, XLA runs float32 convolutions and matrix products in TF32 by default, which
moves the published models' tag probabilities by up to 4e-3 from the original (measured on an
H200); `tj.models.pretrained` builds them with `precision="highest"` (true float32, within 3e-6
there), and `precision=None` leaves the backend's default.

TensorFlow 1's conventions, kept so the converted weights mean what they meant: batch norm with
epsilon 1e-3 and momentum 0.99, after the ReLU; "same" padding puts the extra sample of an even
kernel after the input (JAX's "SAME" does the same); pooling windows that do not fit are dropped
("valid").

- `musicnn` (front end): the musically motivated CNN (timbral filters spanning 40% and 70% of
  the mel axis over 7 frames, temporal filters of 128, 64 and 32 frames over each band, each max
  pooled over frequency) and the dense mid-end (three 7-frame convolutions of 64 with residual
  connections), concatenated per frame: `(batch, frames, 753)`. The published model pools them
  with summary `meanmax` and ends in head `musicnn_backend`.
- `musicnn_vgg` (front end): five 3x3 convolution blocks of 128 with max pooling, flattened:
  `(batch, 256)` for a 187-frame patch. The published model ends in head `linear` with dropout
  0.5.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from tagjax.models.frontends import LogMel
from tagjax.models.heads import _require_vectors
from tagjax.models.layers import SingleChannelConv
from tagjax.models.registry import register_frontend, register_head

# 3 s at 16 kHz with hop 256: the patch length the published models were trained on.
PATCH_FRAMES = 187
# TensorFlow 1's batch-norm defaults (tf.compat.v1.layers.batch_normalization).
TF_BN_EPSILON = 1e-3
TF_BN_MOMENTUM = 0.99


class MusicnnInput(LogMel):
    """The input representation of the published models: `log10(1 + 10000 S)` of the 96-band
    power mel spectrogram, uncentred frames, one batch norm (TensorFlow's epsilon) over all
    bins. Attributes as `LogMel`, and `precision`: of the network's convolutions (None: the
    backend's default; "highest": float32 on GPUs too, see the module docstring)."""

    precision: str | None = None
    center: bool = False
    compression: str = "log1p"
    top_db: float | None = None
    log_gain: float = 10000.0
    normalize: str = "batchnorm_global"
    bn_momentum: float = TF_BN_MOMENTUM
    bn_epsilon: float = TF_BN_EPSILON

    def norm(self, name: str, *, train: bool) -> nn.BatchNorm:
        return nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                            epsilon=self.bn_epsilon, name=name)

    def __call__(self, audio, *, train: bool):
        """`(batch, samples)` -> the network's output, from `network(log_mel(audio))`."""
        return self.network(self.log_mel(audio), train=train)

    def network(self, log_mel, *, train: bool):
        """`(batch, frames, n_mels)` compressed mel -> the network's output (each subclass)."""
        raise NotImplementedError


@register_frontend("musicnn")
class Musicnn(MusicnnInput):
    """musicnn's front and mid-end: audio `(batch, samples)` -> frames `(batch, frames, 753)`.

    Each frame concatenates, in this order, the two timbral blocks (204 each), the three
    temporal blocks (51 each), then the three mid-end layers (64 each). Any number of frames
    works; the published weights were trained on 187. `output` picks another layer's frames
    (musicnn's extractor names them): every layer is still built, so the published weights
    load whatever the choice, and XLA drops what the output does not use.

    Attributes (besides `MusicnnInput`'s):
      timbral_widths: each timbral filter's extent on the mel axis, as a fraction of `n_mels`
        (rounded down: 38 and 67 of 96).
      timbral_length: the timbral filters' length in frames.
      timbral_filters: filters per timbral block (`int(1.6 * 128)`).
      temporal_lengths: each temporal filter's length in frames (one mel band wide).
      temporal_filters: filters per temporal block (`int(1.6 * 32)`).
      midend_filters: filters of each mid-end layer.
      midend_layers: number of mid-end layers (the second and later add their input).
      midend_length: the mid-end convolutions' length in frames.
      output: the frames returned, one of `MUSICNN_OUTPUTS`: "midend" (all 753 features),
        "frontend" (the 561 timbral and temporal features), "timbral" (408), "temporal"
        (153), or a mid-end layer "cnn1", "cnn2", "cnn3" (64 each, after its residual sum).
    """

    timbral_widths: Sequence[float] = (0.4, 0.7)
    timbral_length: int = 7
    timbral_filters: int = 204
    temporal_lengths: Sequence[int] = (128, 64, 32)
    temporal_filters: int = 51
    midend_filters: int = 64
    midend_layers: int = 3
    midend_length: int = 7
    output: str = "midend"

    @nn.compact
    def network(self, log_mel, *, train: bool):
        """`(batch, frames, n_mels)` compressed mel -> `(batch, frames, dim)` (753 for
        "midend")."""
        if self.output not in MUSICNN_OUTPUTS:
            raise ValueError(f"unknown output={self.output!r}; choose one of "
                             f"{', '.join(MUSICNN_OUTPUTS)}")
        x = self.normalized(log_mel, train=train)[..., None]
        # "Same" in time only, by padding: each filter's output is then max pooled over all of
        # frequency, so a filter that fits along the mel axis needs no padding there.
        time_pad = (self.timbral_length - 1) // 2
        blocks = []
        for i, width in enumerate(self.timbral_widths):
            y = SingleChannelConv(self.timbral_filters,
                                  (self.timbral_length, int(width * self.n_mels)),
                                  padding=((time_pad, time_pad), (0, 0)),
                                  precision=self.precision, name=f"timbral{i}")(x)
            blocks.append(self.norm(f"timbral{i}_norm", train=train)(nn.relu(y)).max(axis=2))
        for i, length in enumerate(self.temporal_lengths):
            y = SingleChannelConv(self.temporal_filters, (length, 1), padding="SAME",
                                  precision=self.precision, name=f"temporal{i}")(x)
            blocks.append(self.norm(f"temporal{i}_norm", train=train)(nn.relu(y)).max(axis=2))
        frontend = jnp.concatenate(blocks, axis=-1)

        layers = [frontend]
        y = frontend
        pad = (self.midend_length - 1) // 2
        for i in range(self.midend_layers):
            z = nn.Conv(self.midend_filters, (self.midend_length,), padding=((pad, pad),),
                        precision=self.precision, name=f"midend{i}")(y)
            z = self.norm(f"midend{i}_norm", train=train)(nn.relu(z))
            y = z if i == 0 else z + y
            layers.append(y)
        timbral = len(self.timbral_widths)
        chosen = {
            "midend": layers,
            "frontend": layers[:1],
            "timbral": blocks[:timbral],
            "temporal": blocks[timbral:],
            **{f"cnn{i + 1}": layers[i + 1:i + 2] for i in range(self.midend_layers)},
        }[self.output]
        return jnp.concatenate(chosen, axis=-1)


MUSICNN_OUTPUTS = ("midend", "frontend", "timbral", "temporal", "cnn1", "cnn2", "cnn3")

# ((time, frequency) window, (time, frequency) stride) of the VGG's max pools, as the released
# `models.py` and the graph of the MagnaTagATune model have them. The graph of the Million Song
# Dataset model (its `.meta`) pools differently in the first two blocks; both end at 2 x 1.
VGG_POOLS = (((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)),
             ((4, 4), (4, 4)))
VGG_MSD_POOLS = (((4, 1), (4, 1)), ((1, 4), (1, 4)), ((2, 2), (2, 2)), ((2, 2), (2, 2)),
                 ((4, 4), (4, 4)))


@register_frontend("musicnn_vgg")
class MusicnnVGG(MusicnnInput):
    """The VGG baseline of the musicnn package: audio `(batch, samples)` -> `(batch, dim)`.

    Five blocks of a 3x3 convolution ("same"), ReLU, batch norm, max pooling ("valid") and, in
    training, dropout; the last block's output `(time', freq', filters)` is flattened in that
    order: `dim = 2 * 1 * 128 = 256` for a 187-frame patch of 96 mels. The flattening ties the
    published weights to that patch length.

    Attributes (besides `MusicnnInput`'s):
      filters: output channels of every convolution.
      pools: `((time, freq) window, (time, freq) stride)` of each block's max pool.
      dropout: dropout rate after each of the first four blocks in training.
      output: "flatten" (the clip vector above) or a block's pooled output as frames for a
        temporal summary, "pool1" ... "pool5": `(batch, time', freq' * filters)` (pool3 of a
        187-frame patch: 23 frames of 12 x 128). Every block is still built, so the published
        weights load whatever the choice.
    """

    filters: int = 128
    pools: Sequence = VGG_POOLS
    dropout: float = 0.25
    output: str = "flatten"

    @nn.compact
    def network(self, log_mel, *, train: bool):
        """`(batch, frames, n_mels)` compressed mel -> `(batch, dim)`."""
        outputs = ("flatten", *(f"pool{i + 1}" for i in range(len(self.pools))))
        if self.output not in outputs:
            raise ValueError(f"unknown output={self.output!r}; choose one of "
                             f"{', '.join(outputs)}")
        x = self.normalized(log_mel, train=train)[..., None]
        pooled = []
        for i, (window, strides) in enumerate(self.pools):
            if i > 0:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
            x = nn.relu(nn.Conv(self.filters, (3, 3), padding="SAME", precision=self.precision,
                                name=f"conv{i}")(x))
            x = self.norm(f"conv{i}_norm", train=train)(x)
            x = nn.max_pool(x, tuple(window), strides=tuple(strides), padding="VALID")
            pooled.append(x)
        if self.output == "flatten":
            return x.reshape(x.shape[0], -1)
        frames = pooled[int(self.output.removeprefix("pool")) - 1]
        return frames.reshape(*frames.shape[:2], -1)


EMBEDDING_LAYERS = ("penultimate", "pooled", "pooled_normalized")


@register_head("musicnn_backend")
class MusicnnBackend(nn.Module):
    """musicnn's back end on the pooled frames: batch norm, dropout, dense + ReLU, batch norm,
    dropout, dense: `(batch, dim)` -> logits `(batch, num_tags)`.

    Attributes:
      num_tags: number of outputs.
      hidden: width of the penultimate layer.
      dropout: dropout rate before each dense layer in training.
      embedding: what `embed` returns: "penultimate" (the hidden layer after its batch norm,
        musicnn's `penultimate` feature), "pooled" (the input: the frames' mean and max) or
        "pooled_normalized" (the input after the first batch norm, each feature standardised
        by the statistics of the training data).
      bn_momentum, bn_epsilon: batch-norm settings (TensorFlow 1's defaults).
      precision: of the dense layers (None: the backend's default).
    """

    num_tags: int
    hidden: int = 200
    dropout: float = 0.5
    embedding: str = "penultimate"
    bn_momentum: float = TF_BN_MOMENTUM
    bn_epsilon: float = TF_BN_EPSILON
    precision: str | None = None

    def setup(self):
        if self.embedding not in EMBEDDING_LAYERS:
            raise ValueError(f"unknown embedding={self.embedding!r}; choose one of "
                             f"{', '.join(EMBEDDING_LAYERS)}")
        self.input_norm = nn.BatchNorm(momentum=self.bn_momentum, epsilon=self.bn_epsilon)
        self.hidden_dense = nn.Dense(self.hidden, precision=self.precision)
        self.hidden_norm = nn.BatchNorm(momentum=self.bn_momentum, epsilon=self.bn_epsilon)
        self.drop = nn.Dropout(self.dropout)
        self.output = nn.Dense(self.num_tags, precision=self.precision)

    def normalized_input(self, f, *, train: bool = False):
        """`(batch, dim)` -> the input after the first batch norm."""
        _require_vectors(f, self)
        return self.input_norm(f, use_running_average=not train)

    def penultimate(self, f, *, train: bool = False):
        """`(batch, dim)` -> the hidden layer after its batch norm, `(batch, hidden)`."""
        h = self.drop(self.normalized_input(f, train=train), deterministic=not train)
        return self.hidden_norm(nn.relu(self.hidden_dense(h)), use_running_average=not train)

    def embed(self, f, *, train: bool = False):
        """`(batch, dim)` -> the `embedding` layer: `(batch, hidden)` or `(batch, dim)`."""
        if self.embedding == "pooled":
            _require_vectors(f, self)
            return f
        if self.embedding == "pooled_normalized":
            return self.normalized_input(f, train=train)
        return self.penultimate(f, train=train)

    def __call__(self, f, *, train: bool):
        """`(batch, dim)` -> logits `(batch, num_tags)`."""
        h = self.penultimate(f, train=train)
        return self.output(self.drop(h, deterministic=not train))
