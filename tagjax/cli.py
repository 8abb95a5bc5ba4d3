"""The command line's shared parts: configs by name, `--config.FIELD=VALUE` overrides, one-line
errors, `python -m tagjax.train` and `tagjax list`.

Nothing here imports JAX at import time: `--help` answers at once and a mistake (an unknown
config, field, data set, or a work directory that holds a run with other settings) is refused
in one line, with exit status 2, before the first second of real work.
"""

import contextlib
import difflib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from typing import NoReturn

from tagjax import workdirs

USAGE_ERROR = 2  # argparse's exit status for a mistake on the command line


class UsageError(ValueError):
    """A mistake on the command line (the message says what to do instead)."""


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """Ends the command with `error: message` on stderr, one line, and exit status `code`."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(code)


def did_you_mean(word: str, candidates) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
# Configs


def _configs_folder() -> str:
    spec = importlib.util.find_spec("tagjax.configs")
    return os.path.dirname(spec.origin)


def available_configs() -> list[str]:
    """The names of the training configs that ship with tagjax (`configs/*.py`)."""
    return sorted(name[:-3] for name in os.listdir(_configs_folder())
                  if name.endswith(".py") and not name.startswith("_") and name != "common.py")


def config_path(value: str) -> str:
    """`NAME[:ARG]` of a shipped config as its file's path; a path passes through.

    Raises:
      UsageError: neither a file nor a config's name (the message lists the names).
    """
    path, _, arg = value.partition(":")
    if os.path.isfile(path):
        return value
    candidate = os.path.join(_configs_folder(), f"{path}.py")
    if os.path.isfile(candidate):
        return candidate + (f":{arg}" if arg else "")
    names = available_configs()
    raise UsageError(f"unknown config {value!r}{did_you_mean(path, names)}: not a file and not "
                     f"one of the available configs: {', '.join(names)}")


def resolve_config_argument(argv: list[str]) -> list[str]:
    """Rewrites `--config NAME` into the path of `configs/NAME.py`; paths pass through."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            argv[i + 1] = config_path(argv[i + 1])
        elif arg.startswith("--config="):
            argv[i] = "--config=" + config_path(arg.split("=", 1)[1])
    return argv


def load_config(value: str):
    """The config `NAME[:ARG]` or `PATH[:ARG]` (its module's `get_config([ARG])`).

    Raises:
      UsageError: no such config, or its file fails to load.
    """
    path, _, arg = config_path(value).partition(":")
    try:
        spec = importlib.util.spec_from_file_location(
            f"_tagjax_config_{os.path.basename(path)[:-3]}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config(arg) if arg else module.get_config()
    except Exception as error:  # the user's own config file: say what broke, in one line
        raise UsageError(f"cannot load the config {path}: {type(error).__name__}: "
                         f"{error}") from None


def config_fields(config) -> list[str]:
    """The dotted names of a config's fields, `a.b.c`."""
    return list(workdirs.flatten(config.to_dict()))


def _parse_value(text: str, old):
    """`text` as a value of the type of `old` (what `--config.FIELD=VALUE` means)."""
    import ast
    import json

    if isinstance(old, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise UsageError(f"expected True or False, got {text!r}")
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
            break
        except (ValueError, SyntaxError):
            continue
    else:
        value = text
    if isinstance(old, str):
        return value if isinstance(value, str) else text
    if isinstance(old, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if old is not None and not isinstance(value, type(old)) and not (
            isinstance(old, dict | list | tuple) or hasattr(old, "to_dict")):
        raise UsageError(f"expected a value of type {type(old).__name__}, got {text!r}")
    return value


def has_field(config, key: str) -> bool:
    node = config
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True


def set_field(config, key: str, text: str) -> None:
    """Sets the existing field `key` (`a.b.c`) of `config` from the command line's `text`.

    Raises:
      UsageError: no such field (the message suggests the closest), or a value of another type.
    """
    if not has_field(config, key):
        raise UsageError(f"unknown config field {key!r}{did_you_mean(key, config_fields(config))}"
                         f" in config {config.get('name', '')!r}")
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    try:
        node[leaf] = _parse_value(text, node[leaf])
    except (UsageError, TypeError, ValueError) as error:
        raise UsageError(f"--config.{key}={text}: {error}") from None


def check_dataset_name(config) -> None:
    """Refuses an unknown data set before anything is built (its config is checked when the data
    set is opened, by `tagjax.data.get_source`)."""
    from tagjax.data.registry import BUILDER_MODULES

    name = config.dataset.name
    if name not in BUILDER_MODULES:
        raise UsageError(f"unknown data set {name!r}{did_you_mean(name, BUILDER_MODULES)}; "
                         f"tagjax data sets are {', '.join(sorted(BUILDER_MODULES))} (tagjax "
                         f"list shows their configs)")


# ----------------------------------------------------------------------------------------------
# python -m tagjax.train

TRAIN_USAGE = "python -m tagjax.train --config NAME|PATH [--workdir DIR] [--config.FIELD=VALUE ...]"


def train_help() -> str:
    safe = ", ".join(workdirs.SAFE_FIELDS)
    return f"""usage: {TRAIN_USAGE} [--retest]

Train, evaluate and checkpoint a tagger, then test its best checkpoint (results.json).

options:
  -h, --help            show this help and exit
  --config NAME|PATH    a config: {', '.join(available_configs())}; or a config
                        file with get_config() (NAME:ARG and PATH:ARG call get_config(ARG))
  --config.FIELD=VALUE  override a field, e.g. --config.num_epochs=5,
                        --config.dataset.name=magnatagatune (tagjax list: the data sets)
  --workdir DIR         checkpoints, config.json, metrics.jsonl, tensorboard/ and
                        results.json (default runs/<config name>)
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
    from ml_collections import config_flags

    argv = resolve_config_argument(list(argv))
    if not any(arg == "--config" or arg.startswith("--config=") for arg in argv):
        raise UsageError(f"--config is required: one of {', '.join(available_configs())}, or a "
                         f"config file (usage: {TRAIN_USAGE})")
    config = load_config(_config_value(argv))
    for arg in argv:  # ml_collections answers an unknown field with a traceback
        key = arg.removeprefix("--config.").split("=", 1)[0]
        if arg.startswith("--config.") and not has_field(config, key):
            raise UsageError(f"unknown config field {key!r}"
                             f"{did_you_mean(key, config_fields(config))} in config "
                             f"{config.get('name', '')!r}")
    sys_argv = ["python -m tagjax.train", *argv]
    values = flags.FlagValues()  # not absl's global flags: main() may run many times
    try:
        config_flag = config_flags.DEFINE_config_file(
            "config", None, "a config", flag_values=values, sys_argv=sys_argv)
    except Exception as error:  # the user's config file itself fails to load
        raise UsageError(f"cannot load the config: {type(error).__name__}: {error}") from None
    workdir_flag = flags.DEFINE_string("workdir", None, "work directory", flag_values=values)
    retest_flag = flags.DEFINE_bool("retest", False, "test again", flag_values=values)
    try:
        rest = values(sys_argv)
    except flags.UnrecognizedFlagError as error:
        raise UsageError(f"unknown option --{error.flagname} (usage: {TRAIN_USAGE})") from None
    except flags.Error as error:
        raise UsageError(" ".join(str(error).split())) from None
    if len(rest) > 1:
        raise UsageError(f"unexpected argument {rest[1]!r} (usage: {TRAIN_USAGE})")
    config = config_flag.value
    check_dataset_name(config)
    return config, workdir_flag.value or os.path.join("runs", config.name), retest_flag.value


def _config_value(argv: Sequence[str]) -> str:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config":
            return argv[i + 1]
    raise UsageError("--config is required")


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
            train.retest(config, workdir)
            print(f"wrote {plan.results_path}")
        else:
            train.train_and_evaluate(config, workdir)
            print(written_summary(workdir))
    return 0


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
    print("configs (python -m tagjax.train --config NAME):")
    for name in available_configs():
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
