"""Temporal summaries: a sequence of frames `X` `(batch, frames, dim)` -> a clip vector `f`.

The slides' `f = T(X)`: a bag of frames (a histogram of k-means codewords, fitted once on
training frames and then frozen), a recurrent network read sequence-to-one, or plain pooling;
`none` passes on the clip vector of a front end that already pools over time.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import initializers
from flax.linen.recurrent import DenseParams
from jax import lax

from tagjax import features
from tagjax.models.registry import register_summary

KMEANS_COLLECTION = "kmeans"
# The PCA is kept as flat entries beside the centroids: a nested dict would read as a submodule.
PCA_PREFIX = "pca_"


def _require_frames(x, module: nn.Module):
    if x.ndim != 3:
        raise ValueError(
            f"the {type(module).__name__} summary reads (batch, frames, dim) sequences, got shape "
            f"{x.shape}; use summary 'none' after a front end that outputs clip vectors"
        )


@register_summary("mean")
class MeanPool(nn.Module):
    """Mean over frames: `(batch, frames, dim)` -> `(batch, dim)`."""

    def __call__(self, x, *, train: bool = False):
        _require_frames(x, self)
        return jnp.mean(x, axis=-2)


@register_summary("max")
class MaxPool(nn.Module):
    """Maximum over frames: `(batch, frames, dim)` -> `(batch, dim)`."""

    def __call__(self, x, *, train: bool = False):
        _require_frames(x, self)
        return jnp.max(x, axis=-2)


@register_summary("meanmax")
class MeanMaxPool(nn.Module):
    """Mean and maximum over frames, concatenated: `(batch, frames, dim)` -> `(batch, 2 dim)`."""

    def __call__(self, x, *, train: bool = False):
        _require_frames(x, self)
        return jnp.concatenate([jnp.mean(x, axis=-2), jnp.max(x, axis=-2)], axis=-1)


@register_summary("none")
class NoSummary(nn.Module):
    """Identity on clip vectors `(batch, dim)`, for front ends that pool over time themselves."""

    def __call__(self, x, *, train: bool = False):
        if x.ndim != 2:
            raise ValueError(
                f"summary 'none' passes on (batch, dim) clip vectors, got shape {x.shape}; a "
                "front end that outputs frames needs a temporal summary (mean, lstm, bof, ...)"
            )
        return x


class _RecurrentStack(nn.Module):
    """`num_layers` recurrent layers read left to right; the output is the last layer's final
    hidden state (sequence-to-one)."""

    hidden: int
    num_layers: int
    dropout: float
    unroll: int
    pool: int
    cell_type = nn.RNNCellBase  # a class attribute, not a field: set by each subclass

    def recurrent_layer(self, x, layer: int):
        """One layer over the whole sequence: `(batch, frames, dim)` -> `(batch, frames,
        hidden)`."""
        return nn.RNN(self.cell_type(self.hidden, name=f"layer{layer}"), unroll=self.unroll)(x)

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        _require_frames(x, self)
        if self.pool > 1:
            # Fewer, coarser steps: the recurrence is sequential, its cost per frame read.
            x = nn.max_pool(x, (self.pool,), strides=(self.pool,), padding="VALID")
        for layer in range(self.num_layers):
            if layer > 0:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
            x = self.recurrent_layer(x, layer)
        return x[:, -1]


class _LSTMLayerParams(nn.Module):
    """The parameters of Flax's `OptimizedLSTMCell`, by the same names, initialisers and order
    (so the same key gives the same values): kernels `i{gate}` `(dim, hidden)` for the input,
    `h{gate}` `(hidden, hidden)` and biases for the hidden state, gates i, f, g, o.

    Returns the gates' kernels concatenated, `(dim, 4 hidden)` and `(hidden, 4 hidden)`, and
    the bias `(4 hidden,)`."""

    hidden: int

    @nn.compact
    def __call__(self, x):
        input_kernels, hidden_kernels, biases = [], [], []
        for gate in "ifgo":  # each key is derived from the parameter's name
            kernel, _ = DenseParams(self.hidden, use_bias=False, name=f"i{gate}")(x)
            input_kernels.append(kernel)
            kernel, bias = DenseParams(self.hidden, use_bias=True,
                                       kernel_init=initializers.orthogonal(),
                                       name=f"h{gate}")(jnp.zeros((self.hidden,), x.dtype))
            hidden_kernels.append(kernel)
            biases.append(bias)
        return (jnp.concatenate(input_kernels, axis=-1), jnp.concatenate(hidden_kernels, axis=-1),
                jnp.concatenate(biases))


def _lstm_scan(input_part, hidden_kernel, bias, unroll, keep_states):
    """`lstm_recurrence`'s loop; with `keep_states`, also every step's cell state and gates."""
    zeros = jnp.zeros((input_part.shape[1], hidden_kernel.shape[0]),
                      jnp.result_type(input_part, hidden_kernel))

    def step(carry, input_t):
        c, h = carry
        i, f, g, o = jnp.split((h @ hidden_kernel + bias) + input_t, 4, axis=-1)
        i, f, g, o = nn.sigmoid(i), nn.sigmoid(f), jnp.tanh(g), nn.sigmoid(o)
        c = f * c + i * g
        h = o * jnp.tanh(c)
        return (c, h), ((h, c, jnp.concatenate([i, f, g, o], axis=-1)) if keep_states else h)

    return lax.scan(step, (zeros, zeros), input_part, unroll=unroll)[1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def lstm_recurrence(input_part, hidden_kernel, bias, unroll=1):
    """`OptimizedLSTMCell`'s recurrence from a zero state, with the input's part of the gates
    given: `input_part` `(frames, batch, 4 hidden)` (x W_x, gates i, f, g, o), `hidden_kernel`
    `(hidden, 4 hidden)`, `bias` `(4 hidden,)` -> the hidden states `(frames, batch, hidden)`.

    Its VJP runs the loop backward for the states' gradients alone and takes the kernel's and
    the bias's after it, in one product over all steps: autodiff of the loop adds a `(hidden, 4
    hidden)` product into the kernel's gradient at every step. Like every `jax.custom_vjp`, it
    has reverse-mode derivatives only (`jax.grad`, `jax.vjp`), not `jax.jvp`."""
    return _lstm_scan(input_part, hidden_kernel, bias, unroll, keep_states=False)


def _lstm_recurrence_fwd(input_part, hidden_kernel, bias, unroll):
    hs, cs, gates = _lstm_scan(input_part, hidden_kernel, bias, unroll, keep_states=True)
    return hs, (hs, cs, gates, hidden_kernel)


def _lstm_recurrence_bwd(unroll, residuals, hs_grad):
    hs, cs, gates, hidden_kernel = residuals
    zeros = jnp.zeros_like(hs[:1])
    previous_cs = jnp.concatenate([zeros, cs[:-1]])

    def step(carry, inputs):
        h_grad, c_grad = carry  # from the later steps
        h_grad_t, previous_c, c, gates_t = inputs
        i, f, g, o = jnp.split(gates_t, 4, axis=-1)
        tanh_c = jnp.tanh(c)
        h_grad = h_grad + h_grad_t
        c_grad = c_grad + h_grad * o * (1 - tanh_c * tanh_c)
        # The gradient of the gates before their nonlinearities.
        gates_grad = jnp.concatenate([c_grad * g * i * (1 - i),
                                      c_grad * previous_c * f * (1 - f),
                                      c_grad * i * (1 - g * g),
                                      h_grad * tanh_c * o * (1 - o)], axis=-1)
        return (gates_grad @ hidden_kernel.T, c_grad * f), gates_grad

    _, gates_grads = lax.scan(step, (zeros[0], zeros[0]), (hs_grad, previous_cs, cs, gates),
                              reverse=True, unroll=unroll)
    previous_hs = jnp.concatenate([zeros, hs[:-1]])
    kernel_grad = jnp.einsum("tbh,tbg->hg", previous_hs, gates_grads)
    return gates_grads, kernel_grad, gates_grads.sum(axis=(0, 1))


lstm_recurrence.defvjp(_lstm_recurrence_fwd, _lstm_recurrence_bwd)


@register_summary("lstm")
class LSTMSummary(_RecurrentStack):
    """Stacked LSTM read sequence-to-one: `(batch, frames, dim)` -> `(batch, hidden)`.

    The slides' LSTM_2 (two layers, f in R^1024). Each layer computes Flax's `OptimizedLSTMCell`
    (its parameters, names and initial values; see `recurrent_layer`)
    (gates i, f, g, o with one bias each; forget-gate bias initialised at 0). The summary is
    the last layer's hidden state after the last frame.

    Attributes:
      hidden: hidden size of every layer.
      num_layers: number of stacked layers.
      dropout: dropout rate between layers in training.
      unroll: scan unroll factor (speed only).
      pool: frames max-pooled in time by this factor (non-overlapping windows; a last partial
        window is dropped) before the first layer; 1 reads every frame.
    """

    hidden: int = 1024
    num_layers: int = 2
    dropout: float = 0.0
    unroll: int = 1
    pool: int = 1

    def recurrent_layer(self, x, layer: int):
        """`OptimizedLSTMCell`'s equations with the input part of every step taken out of the
        loop: one `(batch x frames, dim) @ (dim, 4 hidden)` product before the scan, which is
        then left with the `(batch, hidden) @ (hidden, 4 hidden)` recurrent product
        (`lstm_recurrence`, with its own gradient). The sums are the cell's, in its order
        (hidden part + bias, then + input part)."""
        input_kernel, hidden_kernel, bias = _LSTMLayerParams(self.hidden, name=f"layer{layer}")(x)
        input_part = jnp.swapaxes(x @ input_kernel, 0, 1)  # (frames, batch, 4 hidden)
        return jnp.swapaxes(lstm_recurrence(input_part, hidden_kernel, bias, self.unroll), 0, 1)


@register_summary("gru")
class GRUSummary(_RecurrentStack):
    """Stacked GRU read sequence-to-one: `(batch, frames, dim)` -> `(batch, hidden)`.

    Choi et al. 2017's CRNN summary (two layers of 32 units after a 2D CNN). Flax's `GRUCell`
    computes `n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`, the same form as cuDNN/PyTorch.

    Attributes:
      hidden: hidden size of every layer.
      num_layers: number of stacked layers.
      dropout: dropout rate between layers in training.
      unroll: scan unroll factor (speed only).
      pool: as for `LSTMSummary`.
    """

    hidden: int = 32
    num_layers: int = 2
    dropout: float = 0.0
    unroll: int = 1
    pool: int = 1
    cell_type = nn.GRUCell


@register_summary("bof")
class BagOfFrames(nn.Module):
    """Bag of frames: the histogram of the frames' nearest k-means centroids,
    `(batch, frames, dim)` -> `(batch, k)` (each row sums to 1).

    The slides' BoF. The codebook is not learned by gradient descent: it is fitted once on
    training frames (`TaggingModel.frames`, then `tj.features.kmeans_fit`, optionally after
    `tj.features.pca_fit`) and put into the variables with `tj.models.set_kmeans`. It lives in
    the `kmeans` collection, never in `params`, so the optimizer cannot move it:
    `centroids` `(k, dim)`, the fit's `inertia` and `n_iter`, and with PCA the fields of
    `tj.features.PCA` as `pca_mean`, `pca_components`, ... (frames are projected before the
    assignment when these are present).

    Until `set_kmeans` is called the centroids are zeros (`inertia` NaN, `n_iter` 0): every
    frame falls in the first bin.

    Attributes:
      k: number of centroids (the slides use 1024); must equal the fitted k-means' k.
      soft: softmax assignments (`tj.features.bag_of_frames(soft=True)`), differentiable in
        the frames, so a front end before it can be trained; hard counts otherwise.
      pca_components: the number of PCA components the frames are projected on before the
        assignment (0: no PCA). The PCA's variables are declared at `init` (zeros until
        `set_kmeans` puts the fitted ones in), so checkpoints restore them.
      temperature: softness of the soft assignment, in squared-distance units: the mean
        squared distance of a frame to its centroid (`km.inertia / n_frames`) is a natural
        scale; much smaller values make the soft histogram the hard one. 0 takes the
        `temperature` that `set_kmeans` stored beside the codebook (the trainer stores the
        fitted mean squared distance), so the scale follows the frames it was fitted on.
    """

    k: int = 1024
    soft: bool = False
    temperature: float = 1.0
    pca_components: int = 0

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        _require_frames(x, self)
        dim = x.shape[-1]
        if self.pca_components:
            shapes = {"mean": (dim,), "components": (self.pca_components, dim),
                      "explained_variance": (self.pca_components,),
                      "explained_variance_ratio": (self.pca_components,)}
            for field, shape in shapes.items():
                self.variable(KMEANS_COLLECTION, PCA_PREFIX + field, jnp.zeros, shape,
                              jnp.float32)
            self.variable(KMEANS_COLLECTION, PCA_PREFIX + "whiten", jnp.zeros, (), jnp.bool_)
            dim = self.pca_components
        centroids = self.variable(
            KMEANS_COLLECTION, "centroids", jnp.zeros, (self.k, dim), jnp.float32
        ).value
        inertia = self.variable(KMEANS_COLLECTION, "inertia", jnp.full, (), jnp.nan).value
        n_iter = self.variable(KMEANS_COLLECTION, "n_iter", jnp.zeros, (), jnp.int32).value
        if self.has_variable(KMEANS_COLLECTION, PCA_PREFIX + "components"):
            pca = features.PCA(**{
                field: self.get_variable(KMEANS_COLLECTION, PCA_PREFIX + field)
                for field in features.PCA._fields
            })
            x = features.pca_transform(pca, x)
        fitted_temperature = self.variable(
            KMEANS_COLLECTION, "temperature", jnp.ones, (), jnp.float32).value
        codebook = features.KMeans(centroids=centroids, inertia=inertia, n_iter=n_iter)
        temperature = self.temperature if self.temperature > 0 else fitted_temperature
        return features.bag_of_frames(codebook, x, soft=self.soft, temperature=temperature)
