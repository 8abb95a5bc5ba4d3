"""The example schema every tagjax data set shares, so one input pipeline reads them all.

Each example is one track:
- `audio`: `(samples,)` int16 PCM, mono, at `SAMPLE_RATE` (compact: MagnaTagATune's 25,863
  clips are about 12e9 samples, 48 GB as float32 and half that as int16);
- `labels`: `(num_tags,)` uint8 multi-hot, in the order of the builder's tag list;
- `id`: the track's identifier (a clip id, or a path relative to the data set's root).

The tag names are stored in the builder's metadata (`info.metadata["tags"]`) together with the
sample rate (`info.metadata["sample_rate"]`).
"""

import numpy as np

SAMPLE_RATE = 16000
_INT16_SCALE = 32767.0


def features(num_tags: int):
    """The `tfds.features.FeaturesDict` of a data set with `num_tags` tags."""
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict(
        {
            # Raw bytes: without it TFDS serialises int16 as an int64 list of varints (~6 bytes a
            # sample), and a split over 1 GiB of serialised examples makes its shuffler spill to
            # disk through tf.io.gfile, which needs TensorFlow.
            "audio": tfds.features.Tensor(
                shape=(None,), dtype=np.int16, encoding=tfds.features.Encoding.BYTES
            ),
            "labels": tfds.features.Tensor(shape=(num_tags,), dtype=np.uint8),
            "id": tfds.features.Text(),
        }
    )


def metadata(tags: list[str], sample_rate: int = SAMPLE_RATE):
    """The `tfds.core.MetadataDict` that names the tags and the sample rate."""
    import tensorflow_datasets as tfds

    return tfds.core.MetadataDict(tags=list(tags), sample_rate=int(sample_rate))


def audio_to_int16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] `(samples,)` -> int16 `(samples,)`, clipping what lies outside."""
    return np.round(np.clip(samples, -1.0, 1.0) * _INT16_SCALE).astype(np.int16)


def int16_to_audio(pcm: np.ndarray) -> np.ndarray:
    """int16 `(..., samples)` -> float32 `(..., samples)` in [-1, 1]."""
    return pcm.astype(np.float32) / _INT16_SCALE
