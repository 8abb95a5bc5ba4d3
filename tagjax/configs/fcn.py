"""Choi et al. 2016's FCN-5: five 3x3 convolution blocks pooled down to one clip vector, then a
sigmoid layer. Widths are the released code's (32, 128, 128, 192, 256); the time pools fit the
3 s crops used here instead of the paper's 29 s."""

import ml_collections

from tagjax.configs import common


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = common.base_config("fcn")
    config.model.frontend = ml_collections.ConfigDict(dict(
        name="fcn", n_mels=96, channels=(32, 128, 128, 192, 256),
        pools=((2, 2), (2, 2), (2, 2), (3, 3), (4, 4))))
    config.model.summary = ml_collections.ConfigDict(dict(name="none"))
    config.model.head = ml_collections.ConfigDict(dict(name="linear"))
    return common.variant(config, variant, tiny={"model.frontend.channels": (4, 4, 4, 4, 4)})
