"""The slides' MFCC + bag-of-frames: 90 MFCC per frame, assigned to k-means centroids fitted on
training frames (then frozen); the normalised histogram read by a 2-layer MLP. The slides used
K = 1024 on MagnaTagATune; `--config.model.summary.k=1024` restores it."""

import ml_collections

from tagjax.configs import common


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = common.base_config("mfcc_bof")
    # Plain dB MFCC (no batch norm): the codebook is fitted once on these frames.
    config.model.frontend = ml_collections.ConfigDict(dict(name="mfcc", n_mels=96, n_mfcc=90,
                                                           normalize="none"))
    # Soft assignment; temperature 0: the mean squared distance of a training frame to its
    # centroid, measured when the codebook is fitted.
    config.model.summary = ml_collections.ConfigDict(dict(name="bof", k=256, soft=True,
                                                          temperature=0.0))
    config.model.head = ml_collections.ConfigDict(dict(name="mlp", hidden=128, dropout=0.3))
    config.kmeans.pca_components = 0
    return common.variant(config, variant, tiny={
        "model.frontend.n_mfcc": 13, "model.summary.k": 8, "model.head.hidden": 8})
