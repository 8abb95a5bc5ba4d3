"""Flax front ends, temporal summaries and heads, and the registry that composes them.

`build(model_config)` makes a `TaggingModel` (front end -> summary -> head) from the names in a
config; `available()` lists the names. Importing this package registers the built-in
components:

- front ends: `logmel`, `mfcc`, `fcn` (Choi's FCN-5, clip vector), `cnn5` (Choi's CNN as a
  frame encoder), `short_chunk_resnet` (Won et al.'s ShortChunkCNN_Res, clip vector),
  `musicnn` (Pons and Serra's musicnn, frames) and `musicnn_vgg` (their VGG, clip vector);
- summaries: `mean`, `max`, `meanmax`, `lstm`, `gru`, `bof`, `none` (for clip vectors);
- heads: `linear`, `mlp`, `musicnn_backend`.
"""

from tagjax.models.cnn import ChoiCNN, ChoiCNNSequence, ChoiFCN
from tagjax.models.frontends import MFCC, LogMel
from tagjax.models.heads import LinearHead, MLPHead
from tagjax.models.musicnn import Musicnn, MusicnnBackend, MusicnnVGG
from tagjax.models.registry import (
    UnknownComponentError,
    available,
    lookup,
    register,
    register_frontend,
    register_head,
    register_summary,
)
from tagjax.models.resnet import ResidualBlock, ShortChunkResNet
from tagjax.models.summaries import (
    KMEANS_COLLECTION,
    BagOfFrames,
    GRUSummary,
    LSTMSummary,
    MaxPool,
    MeanMaxPool,
    MeanPool,
    NoSummary,
)
from tagjax.models.tagger import TaggingModel, build, predict_proba, set_kmeans

# isort: split
from tagjax.models import pretrained as pretrained

__all__ = [
    "KMEANS_COLLECTION",
    "MFCC",
    "BagOfFrames",
    "ChoiCNN",
    "ChoiCNNSequence",
    "ChoiFCN",
    "GRUSummary",
    "LSTMSummary",
    "LinearHead",
    "LogMel",
    "MLPHead",
    "MaxPool",
    "MeanMaxPool",
    "MeanPool",
    "Musicnn",
    "MusicnnBackend",
    "MusicnnVGG",
    "NoSummary",
    "ResidualBlock",
    "ShortChunkResNet",
    "TaggingModel",
    "UnknownComponentError",
    "available",
    "build",
    "lookup",
    "predict_proba",
    "register",
    "register_frontend",
    "register_head",
    "register_summary",
    "set_kmeans",
]
