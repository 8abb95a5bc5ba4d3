"""The slides' four experiments on the same data: `python -m tagjax.experiments`.

Trains `cnn_lstm`, `cnn_bof` (end to end, and as the slides built it: on the trained `cnn_lstm`
CNN, frozen), `mfcc_bof` and `mfcc_lstm` (each in `OUT/<name>`; a finished run is reused, a
killed one resumed), then writes `OUT/experiments.md` (a markdown table) and
`OUT/experiments.png` (a bar chart) of their test ROC-AUC and PR-AUC beside the figures of the
slides (Sankaran 2017, on MagnaTagATune) and the MFCC-statistics + logistic-regression baseline
of the data set, when `benchmarks/synth_baseline.py` has written it.

    python -m tagjax.experiments [--out runs/experiments] [--configs cnn_lstm,mfcc_lstm]
        [--baseline benchmarks/results/synth_baseline.json] [--set num_epochs=5 ...]
        [--config.num_epochs=5 ...]

Every run name, override and work directory is checked before the first run starts.
"""

import argparse
import difflib
import json
import os
import sys

# ROC-AUC reported on the slides for the four pipelines (MagnaTagATune, Sankaran 2017).
SLIDES_ROC_AUC = {"cnn_bof": 0.67, "cnn_lstm": 0.71, "mfcc_bof": 0.62, "mfcc_lstm": 0.74,
                  "cnn_bof_transfer": 0.67}
# `cnn_bof_transfer` is `cnn_bof` as the slides built it: the trained `cnn_lstm` run's CNN as a
# frozen black box (`init_from`), so it comes after `cnn_lstm`; `cnn_bof` trains end to end.
CONFIGS = ("cnn_lstm", "cnn_bof_transfer", "cnn_bof", "mfcc_bof", "mfcc_lstm")
TRANSFER_SUFFIX = "_transfer"


def experiment_configs(out: str, names: list[str], overrides: list[str]) -> dict:
    """Each run's config, `{name: ConfigDict}`, with the `KEY=VALUE` overrides set in every run
    whose config has the field.

    Raises:
      cli.UsageError: an unknown run name, a field that no run's config has, or a value of the
        wrong type: before any run starts.
    """
    from tagjax import cli

    known = [*CONFIGS, *(n for n in cli.available_configs() if n not in CONFIGS)]
    configs = {}
    for name in names:
        base = name.removesuffix(TRANSFER_SUFFIX)
        if base not in cli.available_configs():
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise cli.UsageError(f"--configs: unknown run {name!r}{hint}; the runs are "
                                 f"{', '.join(known)} (and <config>{TRANSFER_SUFFIX})")
        configs[name] = cli.load_config(base)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise cli.UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. num_epochs=5")
        holders = [config for config in configs.values() if cli.has_field(config, key)]
        if not holders:
            fields = {f for config in configs.values() for f in cli.config_fields(config)}
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise cli.UsageError(f"unknown config field {key!r}{hint}: no run's config has it")
        for config in holders:
            cli.set_field(config, key, value)
    for name, config in configs.items():
        cli.check_dataset_name(config)
        if name.endswith(TRANSFER_SUFFIX):
            config.name = name
            config.init_from = os.path.join(out, "cnn_lstm")
            config.freeze_frontend = True
    return configs


def run_experiments(out: str, configs: list[str], overrides: list[str]) -> dict:
    """Trains (or reuses) each config's run and returns `{config: test report}`.

    Every name, override and work directory is checked before the first run starts: a finished
    run is reused only if it was trained with the same settings (see `tagjax.workdirs`).
    """
    from tagjax import workdirs

    planned = experiment_configs(out, configs, overrides)
    plans = {name: workdirs.plan_run(os.path.join(out, name), config.to_dict())
             for name, config in planned.items()}
    os.makedirs(out, exist_ok=True)
    from tagjax import train

    reports = {}
    for name, config in planned.items():
        workdir = os.path.join(out, name)
        if plans[name].status == "finished":
            reports[name] = plans[name].results
            print(f"{name}: reusing {plans[name].results_path}")
            continue
        print(f"{name}: {workdirs.describe(plans[name], workdir)}")
        reports[name] = train.train_and_evaluate(config, workdir)
    return reports


def _config_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Splits `--config.FIELD=VALUE` (or `--config.FIELD VALUE`) from the other arguments, as
    `FIELD=VALUE` overrides."""
    rest, overrides = [], []
    arguments = iter(argv)
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
    parser = argparse.ArgumentParser(
        prog="python -m tagjax.experiments", description=__doc__.split("\n\n")[0],
        epilog="--config.FIELD=VALUE is --set FIELD=VALUE, as in python -m tagjax.train. A "
               "field is set in every run whose config has it; one that no run has is refused.")
    parser.add_argument("--out", default=os.path.join("runs", "experiments"))
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--baseline", default=os.path.join("benchmarks", "results",
                                                           "synth_baseline.json"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field in every run, e.g. num_epochs=5")
    argv, config_overrides = _config_overrides(sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(argv)
    from tagjax import cli

    with cli.errors_in_one_line():
        reports = run_experiments(args.out, args.configs.split(","),
                                  args.set + config_overrides)
    baseline = load_baseline(args.baseline)
    table = markdown_table(reports, baseline)
    with open(os.path.join(args.out, "experiments.md"), "w") as f:
        f.write(table + "\n")
    bar_chart(reports, baseline, os.path.join(args.out, "experiments.png"))
    print(table)
    print(f"wrote {args.out}/experiments.md and {args.out}/experiments.png")


if __name__ == "__main__":
    main()
