"""Won et al. 2020's short-chunk ResNet (ROC-AUC 0.9129 / PR-AUC 0.4614 on MagnaTagATune):
128 mels, 59,049-sample (3.69 s) chunks, seven residual 3x3 blocks with 2x2 max pooling, then
dense 512, batch norm, ReLU, dropout 0.5 and a sigmoid layer. Won trained it with Adam 1e-4
(weight decay 1e-4), batch 16, then SGD with step-downs; here AdamW with a cosine schedule.
The full width (128 ... 512 channels) is slow on a CPU: the widths are a field to scale."""

import ml_collections

from tagjax.configs import common


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = common.base_config("short_res")
    config.crop_seconds = 59049 / 16000
    config.model.frontend = ml_collections.ConfigDict(dict(name="short_chunk_resnet"))
    config.model.summary = ml_collections.ConfigDict(dict(name="none"))
    config.model.head = ml_collections.ConfigDict(dict(name="mlp", hidden=512, batch_norm=True,
                                                       dropout=0.5))
    config.optimizer.learning_rate = 1e-4
    config.eval_chunks = 16
    # The tiny variant keeps the 3.69 s chunks: seven 2x2 poolings need 128 frames.
    return common.variant(config, variant, tiny={
        "crop_seconds": config.crop_seconds,
        "model.frontend.channels": (4, 4, 4, 4, 4, 4, 8), "model.head.hidden": 8})
