"""The data sets by name: a prepared TFDS builder, or a split as a random-access data source.

    builder = tj.data.get_builder("synth", config="tiny", data_dir="/tmp/tfds")
    source, tags = tj.data.get_source("magnatagatune", "train", manual_dir="~/data/mtat")
    source, tags = tj.data.get_source("folder", "train", directory="~/music")

The first call for a data set (and config) builds it with `download_and_prepare` into
`data_dir` (default: `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`) as ArrayRecord files, which
TFDS writes and reads without TensorFlow (`tfds_compat` lends TFDS local files for splits past
1 GB); later calls reuse what is there. Every data set shares the example schema of
`tagjax.data.schema`.

The builds of `magnatagatune` and `folder` decode audio in worker processes started with the
"spawn" method, which re-imports the main module: in a script, call `get_builder` and
`get_source` under `if __name__ == "__main__":`.
"""

import importlib
import os

from tagjax.data import tfds_compat

# The module that registers each builder with TFDS when imported.
BUILDER_MODULES = {
    "synth": "tagjax.data.synth_builder",
    "magnatagatune": "tagjax.data.magnatagatune",
    "folder": "tagjax.data.folder",
}


def get_builder(name: str, *, config=None, data_dir=None, **builder_kwargs):
    """Returns the TFDS builder of data set `name`, prepared (built on first use).

    Args:
      name: "synth", "magnatagatune" or "folder".
      config: the builder config's name (e.g. "tiny", "clean", "full") or a
        `tfds.core.BuilderConfig`; `None` picks the data set's default.
      data_dir: where prepared data sets live; `None` uses TFDS's default.
      **builder_kwargs: passed to the builder, except `manual_dir` (the folder of files
        downloaded by hand, for "magnatagatune"), which goes to `download_and_prepare`. For
        "folder": `directory` (required), `csv_path` and `tags`. For "magnatagatune" and
        "folder": `decode_workers` (processes that decode audio while building).

    Returns:
      A `tfds.core.DatasetBuilder` whose data is on disk.

    Raises:
      ValueError: `name` is not a tagjax data set.
    """
    import tensorflow_datasets as tfds

    if name not in BUILDER_MODULES:
        raise ValueError(
            f"unknown data set {name!r}; tagjax data sets are {sorted(BUILDER_MODULES)}"
        )
    importlib.import_module(BUILDER_MODULES[name])
    manual_dir = builder_kwargs.pop("manual_dir", None)
    if manual_dir is not None:
        manual_dir = os.path.expanduser(os.fspath(manual_dir))
    builder_kwargs.setdefault("file_format", "array_record")
    if data_dir is not None:
        builder_kwargs["data_dir"] = os.path.expanduser(os.fspath(data_dir))
    if config is not None:
        builder_kwargs["config"] = config
    builder = tfds.builder(name, **builder_kwargs)
    with tfds_compat.local_shuffle_files():  # splits past 1 GB, without TensorFlow
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
    return builder


def get_source(name: str, split: str, *, config=None, data_dir=None, **builder_kwargs):
    """Returns a split of data set `name` as a random-access data source, and its tags.

    Args:
      name, config, data_dir, **builder_kwargs: as for `get_builder`.
      split: the split's name ("train", "valid", "test"; a folder's own split names), or a
        TFDS slice of it such as "train[:10%]".

    Returns:
      `(source, tags)`: `source[i]` is the `i`-th example, a dict of `audio` `(samples,)` int16,
      `labels` `(num_tags,)` uint8 and `id` bytes, with `len(source)` examples; `tags` is the
      list of tag names in the order of `labels`.

    Raises:
      ValueError: the data set has no split `split`.
    """
    builder = get_builder(name, config=config, data_dir=data_dir, **builder_kwargs)
    base_split = split.split("[", 1)[0]
    if base_split not in builder.info.splits:
        left_out = builder.info.metadata.get("left_out_splits", {})
        if base_split in left_out:  # see `folder`: a split whose files all failed to decode
            raise ValueError(
                f"data set {builder.info.full_name!r} has no split {base_split!r}: it was left "
                f"out because {left_out[base_split]} (see info.metadata['skipped']); it has "
                f"{sorted(builder.info.splits)}"
            )
        raise ValueError(
            f"data set {builder.info.full_name!r} has no split {base_split!r}; it has "
            f"{sorted(builder.info.splits)}"
        )
    return builder.as_data_source(split=split), list(builder.info.metadata["tags"])
