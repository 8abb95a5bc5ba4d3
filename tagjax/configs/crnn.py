"""Choi et al. 2017's CRNN: four 3x3 convolution blocks (64, 128, 128, 128 channels) pooled
over frequency and time, a 2-layer GRU of 32 units read sequence-to-one, and a sigmoid layer."""

import ml_collections

from tagjax.configs import common


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = common.base_config("crnn")
    config.model.frontend = ml_collections.ConfigDict(dict(
        name="cnn5", n_mels=96, channels=(64, 128, 128, 128),
        pools=((2, 2), (2, 3), (2, 4), (1, 4)), dropout=0.1))
    config.model.summary = ml_collections.ConfigDict(dict(name="gru", hidden=32, num_layers=2))
    config.model.head = ml_collections.ConfigDict(dict(name="linear"))
    return common.variant(config, variant, tiny={"model.frontend.channels": (4, 4, 4, 4),
                                                 "model.summary.hidden": 8})
