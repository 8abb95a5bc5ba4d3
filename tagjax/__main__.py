"""`tagjax COMMAND ...` (or `python -m tagjax COMMAND ...`): every tagjax command line.

Each command is also `python -m tagjax.COMMAND ...`; `tagjax COMMAND --help` says how to use it.
"""

import importlib
import os
import sys
from collections.abc import Sequence

# command -> (the function that runs it, what it does)
COMMANDS = {
    "train": ("tagjax.cli:train_main", "train, evaluate and checkpoint a tagger (--config NAME)"),
    "tag": ("tagjax.tag:main", "tag audio files with a pretrained model or a trained run"),
    "index": ("tagjax.index:main", "embed audio files into an index for `similar`"),
    "similar": ("tagjax.similar:main", "the tracks of an index nearest to a query track"),
    "experiments": ("tagjax.experiments:main", "the slides' four pipelines, trained and compared"),
    "zeroshot": ("tagjax.zeroshot:main", "score a pretrained model on a data set's tags"),
    "prepare": ("tagjax.prepare:main", "build a data set, here or on an Apache Beam runner"),
    "list": ("tagjax.cli:list_main", "the training configs, pretrained models and data sets"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: tagjax COMMAND [ARGS...]   (or python -m tagjax COMMAND ...)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    lines += ["", "tagjax COMMAND --help says more about each."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv and argv[0] in ("-V", "--version"):
        from tagjax import __version__

        print(f"tagjax {__version__}")
        return 0
    if not argv or argv[0] not in COMMANDS:
        from tagjax import cli

        if not argv:
            print(usage(), file=sys.stderr)
            raise SystemExit(cli.USAGE_ERROR)
        hint = cli.did_you_mean(argv[0], COMMANDS)
        cli.fail(f"unknown command {argv[0]!r}{hint}; the commands are {', '.join(COMMANDS)}")
    from tagjax import cli

    module, _, function = COMMANDS[argv[0]][0].partition(":")
    try:
        with cli.errors_in_one_line():
            status = getattr(importlib.import_module(module), function)(argv[1:]) or 0
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader of the output left (`tagjax list | head`): stop quietly, as Unix tools do,
        # with Python's advice: no further writes to the closed pipe, not even at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
