"""Heads: a clip's summary vector `f` -> one logit per tag (slides: y = sigma(W2 ReLU(W1 f))).

The sigmoid is left to the loss and to prediction. Each head also has `embed`, the activation
just before its output layer, used as the clip's embedding for similarity search.
"""

import flax.linen as nn

from tagjax.models.registry import register_head


def _require_vectors(f, module: nn.Module):
    if f.ndim != 2:
        raise ValueError(
            f"{type(module).__name__} reads (batch, dim) clip vectors, got shape {f.shape}; a "
            "front end that outputs frames needs a temporal summary before the head"
        )


@register_head("linear")
class LinearHead(nn.Module):
    """Single-layer perceptron, the slides' `y = W f` (plus a bias).

    Attributes:
      num_tags: number of outputs `L`.
      dropout: dropout rate on `f` in training (0: none, as in the slides).
      precision: of the product (None: the backend's default, TF32 on recent GPUs).
    """

    num_tags: int
    dropout: float = 0.0
    precision: str | None = None

    def embed(self, f, *, train: bool = False):
        """`(batch, dim)` -> `(batch, dim)`: a linear head's penultimate activation is `f`."""
        _require_vectors(f, self)
        return f

    @nn.compact
    def __call__(self, f, *, train: bool):
        """`(batch, dim)` -> logits `(batch, num_tags)`."""
        f = self.embed(f, train=train)
        f = nn.Dropout(self.dropout, deterministic=not train)(f)
        return nn.Dense(self.num_tags, precision=self.precision, name="output")(f)


@register_head("mlp")
class MLPHead(nn.Module):
    """Two-layer perceptron: dense, [batch norm], ReLU, dropout, dense.

    With `hidden=512, batch_norm=True, dropout=0.5` it is the dense part of Won et al.'s
    ShortChunkCNN_Res; without batch norm it is the slides' `W2 ReLU(W1 f)`.

    Attributes:
      num_tags: number of outputs `L`.
      hidden: width `H` of the hidden layer.
      dropout: dropout rate on the hidden activation in training.
      batch_norm: batch-normalise the hidden layer before the ReLU.
      bn_momentum: decay of the running statistics (0.9 is PyTorch's momentum 0.1).
    """

    num_tags: int
    hidden: int = 512
    dropout: float = 0.5
    batch_norm: bool = False
    bn_momentum: float = 0.9

    def setup(self):
        self.hidden_dense = nn.Dense(self.hidden)
        if self.batch_norm:
            self.hidden_norm = nn.BatchNorm(momentum=self.bn_momentum)
        self.hidden_dropout = nn.Dropout(self.dropout)
        self.output = nn.Dense(self.num_tags)

    def embed(self, f, *, train: bool = False):
        """`(batch, dim)` -> the hidden activation `(batch, hidden)`, after the ReLU."""
        _require_vectors(f, self)
        h = self.hidden_dense(f)
        if self.batch_norm:
            h = self.hidden_norm(h, use_running_average=not train)
        return nn.relu(h)

    def __call__(self, f, *, train: bool):
        """`(batch, dim)` -> logits `(batch, num_tags)`."""
        h = self.hidden_dropout(self.embed(f, train=train), deterministic=not train)
        return self.output(h)
