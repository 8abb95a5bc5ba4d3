"""The slides' CNN + bag-of-frames on a CNN that heard real music: the published musicnn's
front and mid-end (trained on MagnaTagATune, `init_from="musicnn-mtt"`) as the frame encoder,
a k-means codebook fitted on its frames of training clips (after a PCA to 64 dimensions), the
soft histogram read by a 2-layer MLP.

Frozen by default, as the slides built it; `--config.freeze_frontend=False` fine-tunes the
network through the soft assignment. `--config.model.frontend.output` picks the layer whose
frames are clustered (see `musicnn_lstm`)."""

import ml_collections

from tagjax.configs import common


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = common.frozen_musicnn_config("musicnn_bof")
    config.num_epochs = 20
    # Soft assignment; temperature 0: the fitted mean squared distance of a frame to its
    # centroid.
    config.model.summary = ml_collections.ConfigDict(dict(name="bof", k=256, soft=True,
                                                          temperature=0.0))
    config.model.head = ml_collections.ConfigDict(dict(name="mlp", hidden=128, dropout=0.3))
    config.kmeans.pca_components = 64
    # The published front end keeps its size in the tiny variant: its weights are transplanted.
    return common.variant(config, variant, tiny={"model.summary.k": 8, "model.head.hidden": 8})
