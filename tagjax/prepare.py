"""`python -m tagjax.prepare NAME ...`: build (prepare) a data set, here or on a Beam runner.

Training builds its data set on first use; this command builds it apart, e.g. on a cluster:
with `--beam_pipeline_options` the audio is decoded in an Apache Beam pipeline (the `beam`
extra) on the runner those options name, else in worker processes on this machine. It prints
the splits built and the files skipped; the exit status is 0 when every file was used, 1 when
some were skipped (listed, with the reason, in the data set's `metadata.json`), 2 for a mistake
on the command line (one line saying what to do).
"""

import argparse
import os
import sys
from collections.abc import Sequence

from tagjax import cli
from tagjax.data import decode_pool

SKIPPED_FILES = cli.SKIPPED_FILES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tagjax.prepare",
        description="Build a tagjax data set (TFDS ArrayRecord), on this machine or with Beam.",
    )
    parser.add_argument("name", help="the data set: magnatagatune, jamendo, folder, synth")
    parser.add_argument("--config", default=None,
                        help="its config (tagjax list shows them); default: its default")
    parser.add_argument("--data_dir", default=None,
                        help="where prepared data sets live (default $TFDS_DATA_DIR or "
                             "~/tensorflow_datasets)")
    parser.add_argument("--manual_dir", default=None,
                        help="magnatagatune, jamendo: the folder of the files downloaded by hand")
    parser.add_argument("--directory", default=None, help="folder: your audio folder")
    parser.add_argument("--csv_path", default=None, help="folder: its CSV (default tags.csv)")
    parser.add_argument("--decode_workers", type=int, default=None,
                        help="local worker processes (default: every core)")
    parser.add_argument(
        "--beam_pipeline_options", default=None,
        help="build as an Apache Beam pipeline with these options: Beam's flags "
             "('--runner=DataflowRunner --project=P ...') or TFDS's comma-separated form "
             "('runner=DirectRunner,direct_num_workers=8'); '' is the local DirectRunner in "
             "--decode_workers processes. Default: $TAGJAX_BEAM_OPTIONS, else no Beam")
    return parser


def _checked_kwargs(args) -> dict:
    """The builder's arguments; raises `cli.UsageError` for a folder that is not there."""
    kwargs = {}
    for key in ("manual_dir", "directory", "csv_path", "decode_workers"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    for key in ("manual_dir", "directory"):
        if key in kwargs and not os.path.isdir(os.path.expanduser(kwargs[key])):
            raise cli.UsageError(f"--{key} {kwargs[key]!r} is not a folder")
    if args.decode_workers is not None and args.decode_workers < 0:
        raise cli.UsageError(f"--decode_workers must be >= 0, got {args.decode_workers}")
    if args.beam_pipeline_options is not None:
        kwargs["beam_options"] = args.beam_pipeline_options
    return kwargs


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    from tagjax.data import registry

    try:
        kwargs = _checked_kwargs(args)
        registry.dataset_configs(args.name)  # an unknown name, before any work
        builder = registry.get_builder(args.name, config=args.config, data_dir=args.data_dir,
                                       **kwargs)
    except (cli.UsageError, ValueError, OSError) as error:
        cli.fail(str(error))
    print(f"{builder.info.full_name} in {builder.data_dir}")
    for split, info in sorted(builder.info.splits.items()):
        print(f"  {split}: {info.num_examples} examples")
    left_out = decode_pool.skipped_files_record(builder.info)
    if skipped := left_out["skipped_files"]:
        print(f"{len(skipped)} file(s) skipped, listed with the reason in "
              f"{left_out['skipped_files_listed_in']}:", file=sys.stderr)
        for record in skipped[:10]:
            print(f"  {record['split']}: {record['path']}: {record['reason']}", file=sys.stderr)
        if len(skipped) > 10:
            print(f"  ... and {len(skipped) - 10} more", file=sys.stderr)
        return SKIPPED_FILES
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
