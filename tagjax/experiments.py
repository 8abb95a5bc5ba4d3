"""The slides' four experiments on the same data, and transfer from networks that heard real
music: `python -m tagjax.experiments`.

Trains each pipeline with its default config (in `OUT/<name>`; a finished run is reused, a
killed one resumed):
- the slides' four: `cnn_lstm`, `cnn_bof` (end to end, and `cnn_bof_transfer` as the slides
  built it: on the trained `cnn_lstm` CNN, frozen), `mfcc_bof` and `mfcc_lstm`;
- on the published musicnn trained on MagnaTagATune: `musicnn_lstm` and `musicnn_bof` (frozen,
  their configs' default) and `musicnn_lstm_finetune`, `musicnn_bof_finetune` (the same network
  fine-tuned: `FINETUNE_OVERRIDES`);
- `zeroshot`: the published `musicnn-mtt` scored on the data set's tags it predicts, no
  training (`tagjax.zeroshot`);

then writes `OUT/experiments.md` (a markdown table with each run's training time) and
`OUT/experiments.png` (a bar chart) of their test ROC-AUC and PR-AUC beside the figures of the
slides (Sankaran 2017, on MagnaTagATune) and the MFCC-statistics + logistic-regression baseline
of the data set, when `benchmarks/synth_baseline.py` has written it. With `--second-soundfont
SF2`, every row is also scored on the test split rendered with that General MIDI SoundFont
(`tj.data.synth_builder.other_soundfont_config`): the same music on other instruments' samples.

    python -m tagjax.experiments [--out runs/experiments] [--configs cnn_lstm,mfcc_lstm]
        [--baseline benchmarks/results/synth_baseline.json] [--set num_epochs=5 ...]
        [--second-soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2]
"""

import argparse
import json
import os
import sys

# ROC-AUC reported on the slides for the four pipelines (MagnaTagATune, Sankaran 2017).
SLIDES_ROC_AUC = {"cnn_bof": 0.67, "cnn_lstm": 0.71, "mfcc_bof": 0.62, "mfcc_lstm": 0.74,
                  "cnn_bof_transfer": 0.67}
# `cnn_bof_transfer` is `cnn_bof` as the slides built it: the trained `cnn_lstm` run's CNN as a
# frozen black box (`init_from`), so it comes after `cnn_lstm`; `cnn_bof` trains end to end.
CONFIGS = ("cnn_lstm", "cnn_bof_transfer", "cnn_bof", "mfcc_bof", "mfcc_lstm", "zeroshot",
           "musicnn_lstm", "musicnn_bof", "musicnn_lstm_finetune", "musicnn_bof_finetune")
TRANSFER_SUFFIX = "_transfer"
FINETUNE_SUFFIX = "_finetune"
# Fine-tuning the published network: every layer trained, from a smaller learning rate (the
# front end starts from good weights) and for fewer epochs (each runs the network forward and
# backward on every crop: 14-16 minutes an epoch on `synth` on 2 loaded CPU cores).
FINETUNE_OVERRIDES = {"freeze_frontend": False, "num_epochs": 2,
                      "optimizer.learning_rate": 1e-3}
ZEROSHOT = "zeroshot"
ZEROSHOT_MODEL = "musicnn-mtt"


def _applicable(config, overrides: list[str]) -> list[str]:
    """The `FIELD=VALUE` overrides whose field `config` has (`check_runs` refuses a field that no
    run has)."""
    from tagjax import configs

    return [item for item in overrides if configs.has_field(config, item.partition("=")[0])]


def check_runs(out: str, names: list[str], overrides: list[str]) -> None:
    """Everything that can be checked before the first run starts: the run names, the overrides
    (a field some run's config has, a value of its type), the data sets, and each run's work
    directory against its settings (`tagjax.workdirs`): a finished run with other settings is
    refused, so every `results.json` reused holds the run asked for. A finished run asked for
    more epochs keeps its results as `results-step<N>.json` and is extended.

    Raises:
      cli.UsageError, workdirs.WorkdirError: one line saying what is wrong.
    """
    from tagjax import cli, configs, workdirs

    known = [*CONFIGS, *(n for n in configs.available() if n not in CONFIGS)]
    for name in names:
        base = name.removesuffix(TRANSFER_SUFFIX).removesuffix(FINETUNE_SUFFIX)
        if name not in CONFIGS and base not in configs.available():
            raise cli.UsageError(
                f"--configs: unknown run {name!r}{cli.did_you_mean(name, known)}; the runs are "
                f"{', '.join(known)} (and <config>{TRANSFER_SUFFIX})")
    # Each row's config, every override read as its field's type there (the zero-shot row
    # trains nothing: it reads the data set of musicnn_lstm's config).
    defaults = {name: _row_config(name, out, []) for name in names}
    fields = {field for config in defaults.values() for field in configs.fields(config)}
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep:
            raise cli.UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. num_epochs=5")
        if not any(configs.has_field(config, key) for config in defaults.values()):
            raise cli.UsageError(f"unknown config field {key!r}{cli.did_you_mean(key, fields)}: "
                                 f"no run's config has it")
    planned = {}
    for name in names:
        config = _row_config(name, out, overrides)
        cli.check_dataset(config)
        if name != ZEROSHOT:
            planned[name] = workdirs.plan_run(os.path.join(out, name), config.to_dict()), config
    for name, (plan, config) in planned.items():
        if plan.status == "extend":
            print(f"{name}: {workdirs.describe(plan, os.path.join(out, name))}")
            workdirs.start_run(plan, os.path.join(out, name), config.to_dict())


def _config(name: str, out: str, overrides: list[str]):
    """The config of row `name`: its config file's, with the row's own changes and the
    `FIELD=VALUE` `overrides` of the fields it has (see `tagjax.configs.override`)."""
    from tagjax import configs

    config = configs.get(name.removesuffix(TRANSFER_SUFFIX).removesuffix(FINETUNE_SUFFIX))
    if name.endswith(FINETUNE_SUFFIX):
        config.update_from_flattened_dict(FINETUNE_OVERRIDES)
    configs.override(config, _applicable(config, overrides))
    config.name = name
    if name.endswith(TRANSFER_SUFFIX):
        config.init_from = os.path.join(out, "cnn_lstm")
        config.freeze_frontend = True
    if (config.get("frozen_crops_per_clip") and config.freeze_frontend
            and not config.frozen_outputs_dir):
        # The frozen musicnn rows read the same crops: computed once for all of them.
        config.frozen_outputs_dir = os.path.join(out, "frontend_outputs")
    return config


def _row_config(name: str, out: str, overrides: list[str]):
    """`_config` of row `name`; the zero-shot row's is musicnn_lstm's (for its data set)."""
    return _config("musicnn_lstm" if name == ZEROSHOT else name, out, overrides)


def _dataset_kwargs(config) -> dict:
    dataset = config.dataset
    return {"config": dataset.get("config") or None, "data_dir": dataset.get("data_dir") or None}


def run_experiments(out: str, configs: list[str], overrides: list[str]) -> dict:
    """Trains (or reuses) each row's run and returns `{row: test report}`."""
    import time

    from tagjax import train, zeroshot

    reports = {}
    for name in configs:
        workdir = os.path.join(out, name)
        results_path = os.path.join(workdir, "results.json")
        if os.path.exists(results_path):
            with open(results_path) as f:
                reports[name] = json.load(f)
            print(f"{name}: reusing {results_path}")
            continue
        if name == ZEROSHOT:
            config = _row_config(name, out, overrides)
            start = time.perf_counter()
            # The test split read as the training rows read it (`manual_dir`, `directory`, ...:
            # the first row may build the data set), its errors as theirs.
            sources, tags = train._sources(config, splits=("test",))
            report = zeroshot.zero_shot_report(ZEROSHOT_MODEL, sources["test"], tags)
            report.update(dataset=config.dataset.name, split="test")
            report.update(train._skipped_files_record(sources))
            report["test_seconds"] = time.perf_counter() - start
            os.makedirs(workdir, exist_ok=True)
            with open(results_path, "w") as f:
                json.dump(report, f, indent=2)
            reports[name] = report
            continue
        reports[name] = train.train_and_evaluate(_config(name, out, overrides), workdir)
    return reports


def score_other_soundfont(out: str, names: list[str], soundfont: str,
                          overrides: list[str]) -> dict:
    """`{row: report}` of each row's best checkpoint on the test split rendered with
    `soundfont` (each cached in `OUT/<row>/other_soundfont.json`)."""
    import numpy as np

    from tagjax import data as tj_data
    from tagjax import train, zeroshot
    from tagjax.data import synth_builder

    reports = {}
    for name in names:
        path = os.path.join(out, name, "other_soundfont.json")
        if os.path.exists(path):
            with open(path) as f:
                saved = json.load(f)
            if saved.get("soundfont") == os.path.abspath(soundfont):
                reports[name] = saved
                continue
        config = _row_config(name, out, overrides)
        if config.dataset.name != "synth":
            raise ValueError(f"--second-soundfont renders synth; {name} trains on "
                             f"{config.dataset.name}")
        base = _dataset_kwargs(config)["config"] or "default"
        sf_config = synth_builder.other_soundfont_config(soundfont, base=base)
        source, tags = tj_data.get_source("synth", "test", config=sf_config,
                                          data_dir=_dataset_kwargs(config)["data_dir"])
        if name == ZEROSHOT:
            import tagjax as tj
            from tagjax import metrics

            tagger = tj.Tagger.pretrained(ZEROSHOT_MODEL)
            labels, scores, mapping = zeroshot.shared_tag_scores(tagger, source, tags)
            report = metrics.tagging_report(labels, scores, list(mapping))
        else:
            from tagjax import rundir, xla_options

            model, variables, run = rundir.restore(os.path.join(out, name))
            predict = xla_options.jit(train.make_predict(model))
            report = train.evaluate(predict, variables, train._eval_loader(run.train, source),
                                    list(tags), np.asarray)
        report["soundfont"] = os.path.abspath(soundfont)
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
        reports[name] = report
    return reports


def load_baseline(path: str) -> dict | None:
    """The test scores (`roc_auc`, `pr_auc`) in `benchmarks/synth_baseline.py`'s JSON, if any."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        scores = json.load(f)["results"]["tagjax"]
    return {"roc_auc": scores["test_macro_roc_auc"], "pr_auc": scores["test_macro_pr_auc"]}


def _minutes(report: dict) -> str:
    seconds = report.get("train_seconds")
    if seconds is None:
        return "none" if "test_seconds" in report else ""
    return f"{seconds / 60:.1f}"


def markdown_table(reports: dict, baseline: dict | None, other: dict | None = None) -> str:
    header = "| pipeline | test ROC-AUC | test PR-AUC | training (min) |"
    rule = "|---|---|---|---|"
    if other:
        header += " ROC-AUC, other SoundFont | drop |"
        rule += "---|---|"
    header += " slides' ROC-AUC (MagnaTagATune) |"
    rule += "---|"
    lines = [header, rule]
    for name, report in reports.items():
        row = (f"| {name} | {report['roc_auc']:.4f} | {report['pr_auc']:.4f} | "
               f"{_minutes(report)} |")
        if other:
            if name in other:
                roc = other[name]["roc_auc"]
                row += f" {roc:.4f} | {report['roc_auc'] - roc:+.4f} |"
            else:
                row += " | |"
        slides = SLIDES_ROC_AUC.get(name)
        row += f" {slides:.2f} |" if slides is not None else " |"
        lines.append(row)
    if baseline is not None:
        lines.append(f"| baseline: MFCC mean+std, logistic regression | {baseline['roc_auc']:.4f} "
                     f"| {baseline['pr_auc']:.4f} | |" + (" | |" if other else "") + " |")
    return "\n".join(lines)


def bar_chart(reports: dict, baseline: dict | None, path: str, other: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(reports)
    series = [("test ROC-AUC", [reports[n]["roc_auc"] for n in names]),
              ("test PR-AUC", [reports[n]["pr_auc"] for n in names])]
    if other:
        series.append(("test ROC-AUC, other SoundFont",
                       [other.get(n, {}).get("roc_auc", np.nan) for n in names]))
    series.append(("slides' ROC-AUC (MagnaTagATune)",
                   [SLIDES_ROC_AUC.get(n, np.nan) for n in names]))
    x = np.arange(len(names))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(names)), 5.5))
    for i, (label, values) in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label)
    if baseline is not None:
        ax.axhline(baseline["roc_auc"], color="k", linestyle="--", linewidth=1,
                   label="baseline ROC-AUC (MFCC stats + logistic regression)")
    labels = [f"{n}\n{_minutes(reports[n])} min" if _minutes(reports[n]) not in ("", "none")
              else n for n in names]
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("macro score over tags")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2, fontsize=8)
    ax.set_title("The slides' pipelines, from scratch and on a pretrained front end")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join("runs", "experiments"),
                        help="folder of the runs (OUT/<name>; a finished run is reused, a "
                             "killed one resumed) and of experiments.md and experiments.png "
                             "(default: %(default)s)")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="comma-separated rows to run, in this order; cnn_bof_transfer "
                             "starts from OUT/cnn_lstm's run (default: all: %(default)s)")
    parser.add_argument("--baseline", default=os.path.join("benchmarks", "results",
                                                           "synth_baseline.json"),
                        help="the MFCC-statistics baseline's JSON, shown in the table and "
                             "chart when it exists (written by benchmarks/synth_baseline.py; "
                             "default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field in every run that has it, e.g. "
                             "num_epochs=5; also --config.KEY=VALUE")
    parser.add_argument("--second-soundfont", metavar="SF2",
                        help="also score every row on the test split rendered with this "
                             "General MIDI SoundFont")
    from tagjax import cli

    config_overrides, argv = cli.split_config_overrides(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.set += config_overrides
    if args.second_soundfont and not os.path.isfile(args.second_soundfont):
        raise SystemExit(f"error: --second-soundfont {args.second_soundfont} is not a file")
    with cli.errors_in_one_line():  # before the first run starts
        check_runs(args.out, args.configs.split(","), args.set)
    os.makedirs(args.out, exist_ok=True)
    names = args.configs.split(",")
    reports = run_experiments(args.out, names, args.set)
    other = (score_other_soundfont(args.out, names, args.second_soundfont, args.set)
             if args.second_soundfont else None)
    baseline = load_baseline(args.baseline)
    table = markdown_table(reports, baseline, other)
    with open(os.path.join(args.out, "experiments.md"), "w") as f:
        f.write(table + "\n")
    bar_chart(reports, baseline, os.path.join(args.out, "experiments.png"), other)
    print(table)
    print(f"wrote {args.out}/experiments.md and {args.out}/experiments.png")
    # The rows read one data set: the first report that lists its left-out files says it.
    return cli.skipped_files_status(next(
        (report for report in reports.values() if report.get("skipped_files")), {}))


if __name__ == "__main__":
    from tagjax import cli

    with cli.errors_in_one_line():
        raise SystemExit(main())
