"""The data sets by name: a prepared TFDS builder, or a split as a random-access data source.

    builder = tj.data.get_builder("synth", config="tiny", data_dir="/tmp/tfds")
    source, tags = tj.data.get_source("magnatagatune", "train", manual_dir="~/data/mtat")
    source, tags = tj.data.get_source("folder", "train", directory="~/music")

The first call for a data set (and config) builds it with `download_and_prepare` into
`data_dir` (default: `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`) as ArrayRecord files, which
TFDS writes and reads without TensorFlow (`tfds_compat` lends TFDS local files for splits past
1 GB); later calls reuse what is there. Every data set shares the example schema of
`tagjax.data.schema`.

The builds of `magnatagatune`, `jamendo` and `folder` decode audio in worker processes started
with the "spawn" method, which re-imports the main module: in a script, call `get_builder` and
`get_source` under `if __name__ == "__main__":`.
"""

import difflib
import importlib
import os
import re

from tagjax.data import tfds_compat

# Set to Beam pipeline options, it makes the builds that decode audio run as Beam pipelines.
BEAM_OPTIONS_ENV = "TAGJAX_BEAM_OPTIONS"
# The builders that can decode in a Beam pipeline (`pooled_decoding.PooledDecoding`).
BEAM_BUILDERS = ("magnatagatune", "jamendo", "folder")

# The module that registers each builder with TFDS when imported.
BUILDER_MODULES = {
    "synth": "tagjax.data.synth_builder",
    "magnatagatune": "tagjax.data.magnatagatune",
    "jamendo": "tagjax.data.jamendo",
    "folder": "tagjax.data.folder",
}


def get_builder(name: str, *, config=None, data_dir=None, **builder_kwargs):
    """Returns the TFDS builder of data set `name`, prepared (built on first use).

    Args:
      name: "synth", "magnatagatune", "jamendo" or "folder".
      config: the builder config's name (e.g. "tiny", "clean", "full", "top50-split1") or a
        `tfds.core.BuilderConfig`; `None`, "" or "default" pick the data set's default (see
        `dataset_configs`).
      data_dir: where prepared data sets live; `None` uses TFDS's default.
      **builder_kwargs: passed to the builder, except `manual_dir` (the folder of files
        downloaded by hand, for "magnatagatune" and "jamendo"), which goes to
        `download_and_prepare`. For "folder": `directory` (required), `csv_path` and `tags`.
        For "magnatagatune", "jamendo" and "folder": `decode_workers` (processes that decode
        audio while building), and `beam_options`: build with Apache Beam instead, with these
        pipeline options (a string of Beam's command-line flags, e.g. "--runner=DataflowRunner
        --project=... --region=... --temp_location=gs://..."; "" is the DirectRunner in
        `decode_workers` processes); `None` reads them from `$TAGJAX_BEAM_OPTIONS`, unset or
        empty builds without Beam.

    Returns:
      A `tfds.core.DatasetBuilder` whose data is on disk.

    Raises:
      ValueError: `name` is not a tagjax data set, or `config` not one of its configs (the
        message lists them); the builder's own errors (a folder's CSV, ...).
      FileNotFoundError: a data set downloaded by hand whose files are not in `manual_dir`.
    """
    import tensorflow_datasets as tfds

    config = _config_to_build(name, config)
    beam_options = _beam_options(name, builder_kwargs.pop("beam_options", None),
                                 builder_kwargs.get("decode_workers"))
    manual_dir = builder_kwargs.pop("manual_dir", None)
    if manual_dir is not None:
        manual_dir = os.path.expanduser(os.fspath(manual_dir))
    builder_kwargs.setdefault("file_format", "array_record")
    if data_dir is not None:
        builder_kwargs["data_dir"] = os.path.expanduser(os.fspath(data_dir))
    if config is not None:
        builder_kwargs["config"] = config
    try:
        builder = tfds.builder(name, **builder_kwargs)
    except (ValueError, OSError) as error:
        raise _without_tfds_prefix(error) from error
    try:
        with tfds_compat.local_shuffle_files():  # splits past 1 GB, without TensorFlow
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(
                    manual_dir=manual_dir, beam_options=beam_options
                )
            )
    except AssertionError as error:  # TFDS asserts that the files downloaded by hand are there
        missing = re.match(r"Manual directory (.*) does not exist or is empty", str(error))
        if missing is None:
            raise
        raise FileNotFoundError(
            f"data set {name!r} is built from files you download by hand, and {missing[1]} "
            f"does not hold them: pass manual_dir=<their folder> (training: "
            f"--config.dataset.manual_dir=...); tagjax.data.{name} says how to get them"
        ) from error
    return builder


def _beam_options(name: str, flags: str | None, decode_workers: int | None):
    """Beam's `PipelineOptions` for building data set `name`, or `None` to build without Beam.

    Raises:
      ValueError: Beam options are given for a data set that does not decode audio, or Apache
        Beam is not installed.
    """
    from_env = flags is None
    if from_env:
        flags = os.environ.get(BEAM_OPTIONS_ENV)
        if not flags or name not in BEAM_BUILDERS:
            return None  # set for the audio data sets; the others build as they always do
    if name not in BEAM_BUILDERS:
        raise ValueError(f"data set {name!r} is not built with Beam; beam_options applies to "
                         f"{', '.join(BEAM_BUILDERS)}")
    try:
        from tagjax.data import beam_decoding
    except ImportError as error:
        where = f"${BEAM_OPTIONS_ENV}" if from_env else "beam_options"
        raise ValueError(f"{where} asks for an Apache Beam build, but Beam cannot be imported "
                         f"({error}): pip install 'tagjax[beam]'") from None
    workers = (os.cpu_count() or 1) if decode_workers is None else decode_workers
    return beam_decoding.pipeline_options(flags, local_workers=workers)


def dataset_configs(name: str) -> tuple[list[str], str | None]:
    """The named configs of data set `name` and the one it builds by default.

    `folder` has none: its config is named after the folder it reads, so it is `([], None)`.

    Raises:
      ValueError: `name` is not a tagjax data set (the message lists them).
    """
    import tensorflow_datasets as tfds

    if name not in BUILDER_MODULES:
        close = difflib.get_close_matches(name, BUILDER_MODULES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown data set {name!r}{hint}; tagjax data sets are "
            f"{', '.join(sorted(BUILDER_MODULES))}"
        )
    importlib.import_module(BUILDER_MODULES[name])
    builder_class = tfds.builder_cls(name)
    names = [config.name for config in builder_class.BUILDER_CONFIGS or ()]
    default = builder_class.DEFAULT_BUILDER_CONFIG_NAME or (names[0] if names else None)
    return names, default


def config_name_rule(name: str) -> str | None:
    """How data set `name` names the configs it builds besides the listed ones (`jamendo`'s
    splits and excerpts), or `None`."""
    import tensorflow_datasets as tfds

    dataset_configs(name)  # checks the name, registers the builder
    return getattr(tfds.builder_cls(name), "CONFIG_NAME_RULE", None)


def _config_to_build(name: str, config):
    """`config` checked against data set `name`'s configs; "default" (what a training config
    says unless told otherwise) is the data set's default, whatever that one is called."""
    names, default = dataset_configs(name)
    if not isinstance(config, str) or not config:
        return config or None
    if config == "default" and "default" not in names:
        return default
    if not names or config in names:
        return config  # `folder` judges its own config
    import tensorflow_datasets as tfds

    by_name = getattr(tfds.builder_cls(name), "config_from_name", None)
    if by_name is not None:  # configs named by a rule (`jamendo`): its error says the rule
        by_name(config)
        return config
    close = difflib.get_close_matches(config, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = ", ".join(f"{n} (default)" if n == default else n for n in names)
    raise ValueError(f"data set {name!r} has no config {config!r}{hint}; its configs are {listed}")


def _without_tfds_prefix(error: Exception) -> Exception:
    """The builder's own error without the arguments TFDS puts before its message."""
    message = re.sub(r'^Failed to construct dataset "[^"]*", builder_kwargs "\{.*?\}": ', "",
                     str(error), count=1)
    return type(error)(message)


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
