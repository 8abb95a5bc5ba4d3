"""The command line's shared parts: `--config.FIELD=VALUE` arguments (for `tagjax.configs`,
which finds configs and sets their fields), one-line errors, `python -m tagjax.train` and
`tagjax list`.

Nothing here imports JAX at import time: `--help` answers at once and a mistake (an unknown
config, field, data set, or a work directory that holds a run with other settings) is refused
in one line, with exit status 2, before the first second of real work.
"""

import contextlib
import importlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import NoReturn

from tagjax import workdirs
from tagjax.usage import UsageError, did_you_mean

USAGE_ERROR = 2  # argparse's exit status for a mistake on the command line
SKIPPED_FILES = 1  # the work was done, but the data set left some of its files out


def skipped_files_status(report: dict) -> int:
    """A command's exit status once its work is done, as `python -m tagjax.prepare` answers for
    the data set: where `report` lists files the data set left out (`skipped_files`, from
    `decode_pool.skipped_files_record`), one line on stderr saying how many and where they are
    listed, and `SKIPPED_FILES`; otherwise 0."""
    if not (skipped := report.get("skipped_files")):
        return 0
    print(f"note: the data set left out {len(skipped)} file(s) it could not use; "
          f"{report['skipped_files_listed_in']} lists them with the reason", file=sys.stderr)
    return SKIPPED_FILES


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """Ends the command with `error: message` on stderr, one line, and exit status `code`."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(code)


@contextlib.contextmanager
def errors_in_one_line() -> Iterator[None]:
    """Turns the errors a user can fix (a config, a data set, a work directory, a diverged run)
    into one line and an exit status; anything else is a bug and keeps its traceback."""
    try:
        yield
    except (UsageError, workdirs.WorkdirError) as error:
        fail(str(error))
    except Exception as error:
        train = sys.modules.get("tagjax.train")
        if train is not None and isinstance(error, train.ConfigError | train.DataError):
            fail(str(error))
        if train is not None and isinstance(error, train.TrainingDivergedError):
            fail(str(error), code=1)
        raise


# ----------------------------------------------------------------------------------------------
# Configs (found and changed by `tagjax.configs`)


def split_config_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """`(overrides, rest)`: the `--config.FIELD=VALUE` arguments (also `--config.FIELD VALUE`,
    and a bool's `--config.FIELD` and `--noconfig.FIELD`) as `FIELD=VALUE` (`FIELD` alone for
    `--config.FIELD`), for `tagjax.configs.override`, and the other arguments in their order."""
    overrides, rest = [], []
    arguments = list(argv)
    i = 0
    while i < len(arguments):
        arg = arguments[i]
        if arg.startswith("--noconfig."):
            overrides.append(f"{arg.removeprefix('--noconfig.')}=false")
        elif arg.startswith("--config."):
            field = arg.removeprefix("--config.")
            if "=" in field:
                overrides.append(field)
            elif i + 1 < len(arguments) and not arguments[i + 1].startswith("--"):
                overrides.append(f"{field}={arguments[i + 1]}")
                i += 1
            else:
                overrides.append(field)
        else:
            rest.append(arg)
        i += 1
    return overrides, rest


def check_dataset(config) -> None:
    """Refuses an unknown data set, or a sample rate other than the data sets', before anything
    is built (the data set's config, and its own rate, are checked when it is opened:
    `tagjax.data.get_source`, `tagjax.train`)."""
    from tagjax.data import schema
    from tagjax.data.registry import BUILDER_MODULES

    name = config.dataset.name
    if name not in BUILDER_MODULES:
        raise UsageError(f"unknown data set {name!r}{did_you_mean(name, BUILDER_MODULES)}; "
                         f"tagjax data sets are {', '.join(sorted(BUILDER_MODULES))} (tagjax "
                         f"list shows their configs)")
    if config.sample_rate != schema.SAMPLE_RATE:
        raise UsageError(f"sample_rate={config.sample_rate}, but tagjax data sets hold "
                         f"{schema.SAMPLE_RATE} Hz audio (every file is resampled to it): leave "
                         f"sample_rate at {schema.SAMPLE_RATE}")


# ----------------------------------------------------------------------------------------------
# python -m tagjax.train

TRAIN_USAGE = "python -m tagjax.train --config NAME|PATH [--workdir DIR] [--config.FIELD=VALUE ...]"


def train_help() -> str:
    from tagjax import configs

    safe = ", ".join(workdirs.SAFE_FIELDS)
    return f"""usage: {TRAIN_USAGE} [--retest]

Train, evaluate and checkpoint a tagger, then test its best checkpoint (results.json).

options:
  -h, --help            show this help and exit
  --config NAME|PATH    a config: {', '.join(configs.available())}; or a config
                        file with get_config(); NAME:tiny is the config shrunk to
                        train in seconds on synth/tiny (PATH:ARG calls get_config(ARG))
  --config.FIELD=VALUE  override a field, e.g. --config.num_epochs=5,
                        --config.dataset.name=magnatagatune (tagjax list: the data sets)
  --workdir DIR         checkpoints, config.json, metrics.jsonl, tensorboard/ and
                        results.json (default runs/<config name>[_<variant>])
  --retest              test the best checkpoint of the finished run in DIR again, on
                        its data set (results.json) or another one with the same tags
                        (results-<data set>-<config>.json)

A work directory holds one run. The same command again resumes it, or, when it has finished,
says so and leaves it. Other settings are refused, naming the fields that differ, except
{safe} (num_epochs upwards: extends a finished run, whose results are kept as
results-step<N>.json)."""


def parse_train_args(argv: Sequence[str]):
    """`(config, workdir, retest)` from `python -m tagjax.train`'s arguments (no program name).

    Raises:
      UsageError: what is wrong, in one line.
    """
    from absl import flags

    from tagjax import configs

    overrides, rest = split_config_overrides(argv)
    values = flags.FlagValues()  # not absl's global flags: main() may run many times
    flags.DEFINE_string("config", None, "a config", flag_values=values)
    flags.DEFINE_string("workdir", None, "work directory", flag_values=values)
    flags.DEFINE_bool("retest", False, "test again", flag_values=values)
    try:
        leftover = values(["python -m tagjax.train", *rest])
    except flags.UnrecognizedFlagError as error:
        raise UsageError(f"unknown option --{error.flagname} (usage: {TRAIN_USAGE})") from None
    except flags.Error as error:
        raise UsageError(" ".join(str(error).split())) from None
    if len(leftover) > 1:
        raise UsageError(f"unexpected argument {leftover[1]!r} (usage: {TRAIN_USAGE})")
    if values.config is None:
        raise UsageError(f"--config is required: one of {', '.join(configs.available())}, or a "
                         f"config file (usage: {TRAIN_USAGE})")
    config = configs.get(values.config)
    configs.override(config, overrides)
    check_dataset(config)
    # A variant's runs apart from the config's own: runs/cnn_lstm_tiny for cnn_lstm:tiny.
    variant = re.sub(r"\W+", "_", values.config.partition(":")[2])
    default_workdir = os.path.join("runs", f"{config.name}_{variant}" if variant else config.name)
    return config, values.workdir or default_workdir, values.retest


def _check_writable(workdir: str) -> None:
    """The work directory can be made and written to: said now, not after the data set's build."""
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the work directory {workdir}: {error.strerror}") from None
    if not os.access(workdir, os.W_OK):
        raise UsageError(f"cannot write to the work directory {workdir}: permission denied")


def written_summary(workdir: str) -> str:
    """One line naming what a run's work directory holds."""
    parts = []
    for name, what in (("results.json", "test results"), ("config.json", "settings"),
                       ("metrics.jsonl", "metrics"), ("tensorboard", "TensorBoard events"),
                       ("checkpoints", "checkpoints"),
                       ("frontend_outputs", "the frozen front end's outputs")):
        if os.path.exists(os.path.join(workdir, name)):
            parts.append(f"{name}{'/' if name[-4:] not in ('json', 'sonl') else ''} ({what})")
    return f"wrote {workdir}: " + ", ".join(parts)


def train_main(argv: Sequence[str] | None = None) -> int:
    """`python -m tagjax.train` (see `train_help`); `argv` without the program name."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv):
        print(train_help())
        return 0
    with errors_in_one_line():
        config, workdir, retest = parse_train_args(argv)
        plan = workdirs.plan_run(workdir, config.to_dict(), retest=retest)
        print(workdirs.describe(plan, workdir, config.name))
        if plan.status == "finished":
            return 0
        _check_writable(workdir)

        import jax
        from absl import logging

        from tagjax import train

        # Orbax logs every save and restore at INFO through absl; the progress bar says enough.
        logging.set_verbosity(logging.WARNING)
        if config.multihost:
            jax.distributed.initialize()
        if retest:
            report = train.retest(config, workdir)
            print(f"wrote {plan.results_path}")
        else:
            report = train.train_and_evaluate(config, workdir)
            print(written_summary(workdir))
    return skipped_files_status(report)


# ----------------------------------------------------------------------------------------------
# tagjax list


def _first_sentence(module_name: str) -> str:
    import textwrap

    doc = " ".join((importlib.import_module(module_name).__doc__ or "").split())
    return textwrap.shorten(doc.split(". ")[0].removesuffix("."), 96, placeholder=" ...")


def list_main(argv: Sequence[str] | None = None) -> int:
    """`tagjax list`: the training configs, the pretrained models and the data sets."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print("usage: tagjax list\n\nList the training configs, the pretrained models and the "
              "data sets with their configs.")
        return 0
    if argv:
        fail(f"unexpected argument {argv[0]!r} (usage: tagjax list)")
    from tagjax import configs

    print("configs (python -m tagjax.train --config NAME, or NAME:tiny):")
    for name in configs.available():
        print(f"  {name}: {_first_sentence(f'tagjax.configs.{name}')}")
    from tagjax.models import pretrained
    from tagjax.tag import DEFAULT_MODEL

    print("pretrained models (python -m tagjax.tag --model NAME; train: --config.init_from=NAME):")
    for name in pretrained.available():
        info = pretrained.info(name)
        default = " (default)" if name == DEFAULT_MODEL else ""
        print(f"  {name}{default}: {info.architecture}, trained on {info.dataset}, "
              f"{len(info.tags)} tags; published test ROC-AUC {info.published_roc_auc:.4f}")
    from tagjax.data import registry

    print("data sets (--config.dataset.name=NAME --config.dataset.config=CONFIG):")
    for name in sorted(registry.BUILDER_MODULES):
        configs, default = registry.dataset_configs(name)
        listed = ", ".join(f"{c} (default)" if c == default else c for c in configs)
        rule = registry.config_name_rule(name)
        listed += f"; also {rule}" if rule else ""
        print(f"  {name}: " + (listed or "your audio folder and its tags.csv "
                                          "(--config.dataset.directory=DIR)"))
    return 0
