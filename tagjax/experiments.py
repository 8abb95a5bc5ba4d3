"""The slides' four experiments on the same data: `python -m tagjax.experiments`.

Trains `cnn_lstm`, `cnn_bof` (end to end, and as the slides built it: on the trained `cnn_lstm`
CNN, frozen), `mfcc_bof` and `mfcc_lstm` (each in `OUT/<name>`; a finished run is reused, a
killed one resumed), then writes `OUT/experiments.md` (a markdown table) and
`OUT/experiments.png` (a bar chart) of their test ROC-AUC and PR-AUC beside the figures of the
slides (Sankaran 2017, on MagnaTagATune) and the MFCC-statistics + logistic-regression baseline
of the data set, when `benchmarks/synth_baseline.py` has written it.

    python -m tagjax.experiments [--out runs/experiments] [--configs cnn_lstm,mfcc_lstm]
        [--baseline benchmarks/results/synth_baseline.json] [--set num_epochs=5 ...]
"""

import argparse
import json
import os

# ROC-AUC reported on the slides for the four pipelines (MagnaTagATune, Sankaran 2017).
SLIDES_ROC_AUC = {"cnn_bof": 0.67, "cnn_lstm": 0.71, "mfcc_bof": 0.62, "mfcc_lstm": 0.74,
                  "cnn_bof_transfer": 0.67}
# `cnn_bof_transfer` is `cnn_bof` as the slides built it: the trained `cnn_lstm` run's CNN as a
# frozen black box (`init_from`), so it comes after `cnn_lstm`; `cnn_bof` trains end to end.
CONFIGS = ("cnn_lstm", "cnn_bof_transfer", "cnn_bof", "mfcc_bof", "mfcc_lstm")
TRANSFER_SUFFIX = "_transfer"


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _apply_overrides(config, overrides: list[str]) -> None:
    """Sets each `KEY=VALUE` where `config` has the field (`check_runs` refuses a field that no
    run has), the value read as the field's type."""
    from tagjax import cli

    for item in overrides:
        key, _, value = item.partition("=")
        if cli.has_field(config, key):
            cli.set_field(config, key, value)


def _config(name: str, out: str, overrides: list[str]):
    """The config of run `name`: its config file's, with `overrides` and the run's own changes."""
    import importlib

    base = name.removesuffix(TRANSFER_SUFFIX)
    config = importlib.import_module(f"tagjax.configs.{base}").get_config()
    _apply_overrides(config, overrides)
    if name.endswith(TRANSFER_SUFFIX):
        config.name = name
        config.init_from = os.path.join(out, "cnn_lstm")
        config.freeze_frontend = True
    return config


def check_runs(out: str, names: list[str], overrides: list[str]) -> None:
    """Everything that can be checked before the first run starts: the run names, the overrides
    (a field some run's config has, a value of its type), the data sets, and each run's work
    directory against its settings (`tagjax.workdirs`): a finished run with other settings is
    refused, so every `results.json` reused holds the run asked for. A finished run asked for
    more epochs keeps its results as `results-step<N>.json` and is extended.

    Raises:
      cli.UsageError, workdirs.WorkdirError: one line saying what is wrong.
    """
    from tagjax import cli, workdirs

    configs = {}
    for name in names:
        try:
            configs[name] = _config(name, out, [])
        except ModuleNotFoundError:  # no config file: one of CONFIGS that trains nothing, or a typo
            if name not in CONFIGS:
                known = [*CONFIGS, *(n for n in cli.available_configs() if n not in CONFIGS)]
                raise cli.UsageError(
                    f"--configs: unknown run {name!r}{cli.did_you_mean(name, known)}; the runs "
                    f"are {', '.join(known)} (and <config>{TRANSFER_SUFFIX})") from None
    fields = {field for config in configs.values() for field in cli.config_fields(config)}
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep:
            raise cli.UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. num_epochs=5")
        if configs and not any(cli.has_field(config, key) for config in configs.values()):
            raise cli.UsageError(f"unknown config field {key!r}{cli.did_you_mean(key, fields)}: "
                                 f"no run's config has it")
    planned = {}
    for name in configs:
        config = _config(name, out, overrides)
        cli.check_dataset_name(config)
        planned[name] = workdirs.plan_run(os.path.join(out, name), config.to_dict()), config
    for name, (plan, config) in planned.items():
        if plan.status == "extend":
            print(f"{name}: {workdirs.describe(plan, os.path.join(out, name))}")
            workdirs.start_run(plan, os.path.join(out, name), config.to_dict())


def run_experiments(out: str, configs: list[str], overrides: list[str]) -> dict:
    """Trains (or reuses) each config's run and returns `{config: test report}`."""
    from tagjax import train

    reports = {}
    for name in configs:
        workdir = os.path.join(out, name)
        results_path = os.path.join(workdir, "results.json")
        if os.path.exists(results_path):
            with open(results_path) as f:
                reports[name] = json.load(f)
            print(f"{name}: reusing {results_path}")
            continue
        reports[name] = train.train_and_evaluate(_config(name, out, overrides), workdir)
    return reports


def _config_overrides(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """`--config.FIELD=VALUE` (or `--config.FIELD VALUE`), as in `python -m tagjax.train`,
    split from the other arguments as `FIELD=VALUE` overrides."""
    import sys

    rest, overrides = [], []
    arguments = iter(sys.argv[1:] if argv is None else argv)
    for arg in arguments:
        if not arg.startswith("--config."):
            rest.append(arg)
        elif "=" in arg:
            overrides.append(arg.removeprefix("--config."))
        else:
            overrides.append(f"{arg.removeprefix('--config.')}={next(arguments, '')}")
    return rest, overrides


def load_baseline(path: str) -> dict | None:
    """The test scores (`roc_auc`, `pr_auc`) in `benchmarks/synth_baseline.py`'s JSON, if any."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        scores = json.load(f)["results"]["tagjax"]
    return {"roc_auc": scores["test_macro_roc_auc"], "pr_auc": scores["test_macro_pr_auc"]}


def markdown_table(reports: dict, baseline: dict | None) -> str:
    lines = ["| pipeline | test ROC-AUC | test PR-AUC | slides' ROC-AUC (MagnaTagATune) |",
             "|---|---|---|---|"]
    for name, report in reports.items():
        lines.append(f"| {name} | {report['roc_auc']:.4f} | {report['pr_auc']:.4f} | "
                     f"{SLIDES_ROC_AUC.get(name, float('nan')):.2f} |")
    if baseline is not None:
        lines.append(f"| baseline: MFCC mean+std, logistic regression | {baseline['roc_auc']:.4f} "
                     f"| {baseline['pr_auc']:.4f} | |")
    return "\n".join(lines)


def bar_chart(reports: dict, baseline: dict | None, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(reports)
    roc = [reports[n]["roc_auc"] for n in names]
    pr = [reports[n]["pr_auc"] for n in names]
    slides = [SLIDES_ROC_AUC.get(n, np.nan) for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.bar(x - 0.27, roc, 0.27, label="tagjax test ROC-AUC")
    ax.bar(x, pr, 0.27, label="tagjax test PR-AUC")
    ax.bar(x + 0.27, slides, 0.27, label="slides' ROC-AUC (MagnaTagATune)")
    if baseline is not None:
        ax.axhline(baseline["roc_auc"], color="k", linestyle="--", linewidth=1,
                   label="baseline ROC-AUC (MFCC stats + logistic regression)")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("macro score over tags")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=8)
    ax.set_title("The slides' four pipelines on the same data")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join("runs", "experiments"))
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--baseline", default=os.path.join("benchmarks", "results",
                                                           "synth_baseline.json"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field in every run that has it, e.g. "
                             "num_epochs=5; also --config.KEY=VALUE")
    argv, config_overrides = _config_overrides(argv)
    args = parser.parse_args(argv)
    args.set += config_overrides
    from tagjax import cli

    with cli.errors_in_one_line():  # before the first run starts
        check_runs(args.out, args.configs.split(","), args.set)
    os.makedirs(args.out, exist_ok=True)
    reports = run_experiments(args.out, args.configs.split(","), args.set)
    baseline = load_baseline(args.baseline)
    table = markdown_table(reports, baseline)
    with open(os.path.join(args.out, "experiments.md"), "w") as f:
        f.write(table + "\n")
    bar_chart(reports, baseline, os.path.join(args.out, "experiments.png"))
    print(table)
    print(f"wrote {args.out}/experiments.md and {args.out}/experiments.png")


if __name__ == "__main__":
    from tagjax import cli

    with cli.errors_in_one_line():
        main()
