"""The slides' CNN + bag-of-frames: Choi's 5-layer CNN as a frame encoder, frames assigned to
k-means centroids fitted on training frames (then frozen), the histogram read by a 2-layer MLP.

As on the slides, the CNN is meant to be a trained black box: `--config.init_from=RUN` takes the
front end of a trained `cnn_lstm` run (frozen unless `--config.freeze_frontend=False`), and the
k-means is fitted on its frames. Without `init_from` the codebook is fitted on the frames of the
freshly initialised CNN and the model trains end to end through the soft assignment."""

import ml_collections

from tagjax.configs import cnn_lstm, common


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = common.base_config("cnn_bof")
    config.model.frontend = ml_collections.ConfigDict(cnn_lstm.CNN_FRONTEND)
    # Soft assignment; temperature 0: the mean squared distance of a training frame to its
    # centroid, measured when the codebook is fitted.
    config.model.summary = ml_collections.ConfigDict(dict(name="bof", k=256, soft=True,
                                                          temperature=0.0))
    config.model.head = ml_collections.ConfigDict(dict(name="mlp", hidden=128, dropout=0.3))
    return common.variant(config, variant, tiny={
        "model.frontend.channels": (4, 4, 4, 4, 4), "model.summary.k": 8, "model.head.hidden": 8})
