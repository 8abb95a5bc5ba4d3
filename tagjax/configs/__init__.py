"""The training configs, and the one way every command finds and changes them.

Each config module's `get_config(variant="")` returns an `ml_collections.ConfigDict` built from
`common.base_config()`; its variant "tiny" is the same architecture shrunk to train in seconds
on `synth/tiny` (see `common`).

    config = tagjax.configs.get("cnn_lstm")          # a config of this package, by name
    config = tagjax.configs.get("cnn_lstm:tiny")     # its tiny variant (or get("cnn_lstm", "tiny"))
    config = tagjax.configs.get("my_config.py")      # a file with get_config() (also FILE:ARG)
    tagjax.configs.override(config, ["num_epochs=5", "model.summary.hidden=1024"])

A config comes back locked: its fields can be set but not added, so a misspelt field is refused
instead of silently added. Nothing here imports JAX.
"""

import importlib
import importlib.util
import os
from collections.abc import Iterable

import ml_collections

from tagjax.usage import UsageError, did_you_mean

# Modules of this package that are not configs.
_HELPERS = ("common",)


def available() -> list[str]:
    """The names of the configs that ship with tagjax."""
    folder = os.path.dirname(os.path.abspath(__file__))
    return sorted(name[:-3] for name in os.listdir(folder)
                  if name.endswith(".py") and not name.startswith("_")
                  and name[:-3] not in _HELPERS)


def get(name: str, variant: str = "") -> ml_collections.ConfigDict:
    """The config `name`, locked.

    Args:
      name: a config of this package (`available()`) or the path of a config file (a module
        with `get_config()`), either followed by `:VARIANT` as on the command line.
      variant: the variant, e.g. "tiny" (the same as `NAME:tiny`); "" for the config itself.
        A config file's `get_config(variant)` takes whatever the file accepts.

    Raises:
      UsageError: `name` is neither (the message suggests the closest name and lists them), the
        config has no such variant, or a config file fails to load (one line saying why).
    """
    path, _, suffix = name.partition(":")
    if suffix and variant and suffix != variant:
        raise UsageError(f"config {name!r} asked for with another variant, {variant!r}")
    variant = variant or suffix
    if os.path.isfile(path):
        config = _from_file(path, variant)
    elif path in available():
        module = importlib.import_module(f"{__name__}.{path}")
        config = module.get_config(variant) if variant else module.get_config()
    else:
        names = available()
        raise UsageError(f"unknown config {name!r}{did_you_mean(path, names)}: not a file and "
                         f"not one of the available configs: {', '.join(names)}")
    if not isinstance(config, ml_collections.ConfigDict):
        raise UsageError(f"the config {name} is a {type(config).__name__}, not an "
                         f"ml_collections.ConfigDict: its get_config() must return one")
    config.lock()
    return config


def _from_file(path: str, variant: str):
    """`get_config([variant])` of the config file `path`; its errors as one `UsageError`."""
    try:
        spec = importlib.util.spec_from_file_location(
            f"_tagjax_config_{os.path.basename(path).removesuffix('.py')}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config(variant) if variant else module.get_config()
    except UsageError:
        raise
    except Exception as error:  # the user's own file: say what broke, in one line
        raise UsageError(f"cannot load the config {path}: {type(error).__name__}: "
                         f"{error}") from None


def fields(config: ml_collections.ConfigDict) -> list[str]:
    """The dotted names of a config's fields, `a.b.c` (an empty ConfigDict is a field)."""
    from tagjax import workdirs

    return list(workdirs.flatten(config.to_dict()))


def has_field(config: ml_collections.ConfigDict, key: str) -> bool:
    """Whether `config` has the field `key` (`a.b.c`)."""
    node = config
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False
        node = node[part]
    return True


def _value(config: ml_collections.ConfigDict, key: str):
    for part in key.split("."):
        config = config[part]
    return config


def override(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> None:
    """Sets fields of `config` from `FIELD=VALUE` texts, as `--config.FIELD=VALUE` would (a
    bool's bare `FIELD` sets it, as `--config.FIELD` does).

    Each value is read by ml_collections' config flags as the type of the field it replaces:
    `True`/`false`/`1`/`0` for a bool, `[4, 4]` or `(4, 4)` for a tuple, a whole number for an
    int, any number for a float, the text as it is for a string.

    Raises:
      UsageError: a field the config lacks (the message suggests the
        closest one), a value that is not of its field's type, or none for a field not a bool.
    """
    arguments = []
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not has_field(config, key):
            raise UsageError(f"unknown config field {key!r}{did_you_mean(key, fields(config))} "
                             f"in config {config.get('name', '')!r}")
        if not sep and not isinstance(_value(config, key), bool):
            raise UsageError(f"--config.{key} needs a value: --config.{key}=VALUE")
        arguments.append(f"--config.{item}")
    if not arguments:
        return
    from absl import flags
    from ml_collections import config_flags

    argv = ["tagjax", *arguments]
    values = flags.FlagValues()  # not absl's global flags: commands may run many times
    config_flags.DEFINE_config_dict("config", config, flag_values=values, sys_argv=argv)
    try:
        values(argv)
    except flags.Error as error:  # "flag --config.num_epochs=many: invalid literal for int()..."
        raise UsageError(" ".join(str(error).removeprefix("flag ").split())) from None
