"""`python -m tagjax.experiments`: finished runs are reused, the others trained (the transfer run
on the trained `cnn_lstm` front end), the table and chart name the baseline and each run's
training time, and `--second-soundfont` scores every row on the test clips rendered again."""

import json
import shutil

import numpy as np
import pytest
from tiny_overrides import as_set_arguments, tiny_overrides

from tagjax import data as tj_data
from tagjax import experiments
from tagjax.data import synth, synth_builder


def test_experiments_reuse_finished_runs_train_the_rest_and_report(
    trained_run, synth_tiny_dir, tmp_path, capsys
):
    out = tmp_path / "experiments"
    shutil.copytree(trained_run, out / "cnn_lstm")
    baseline = tmp_path / "synth_baseline.json"
    baseline.write_text(json.dumps(
        {"results": {"tagjax": {"test_macro_roc_auc": 0.875, "test_macro_pr_auc": 0.625}}}
    ))
    # The "second" SoundFont is the default one under another name: the same clips come out.
    soundfont = tmp_path / "same_as_default.sf2"
    shutil.copyfile(synth.DEFAULT_SOUNDFONT, soundfont)
    argv = ["--out", str(out), "--configs", "cnn_lstm,cnn_bof_transfer",
            "--baseline", str(baseline), "--second-soundfont", str(soundfont),
            "--set", f"dataset.data_dir={synth_tiny_dir}"]
    argv += as_set_arguments(tiny_overrides("cnn_lstm", "cnn_bof"))

    assert experiments.main(argv) == 0  # synth leaves no file out
    printed = capsys.readouterr().out
    assert "cnn_lstm: reusing" in printed
    assert "cnn_bof_transfer: reusing" not in printed
    transfer_config = json.loads((out / "cnn_bof_transfer" / "config.json").read_text())["train"]
    assert transfer_config["init_from"] == str(out / "cnn_lstm")
    assert transfer_config["freeze_frontend"] is True

    rows = (out / "experiments.md").read_text().splitlines()
    assert len(rows) == 2 + 3  # header, rule, two runs and the baseline
    for name in ("cnn_lstm", "cnn_bof_transfer"):
        report = json.loads((out / name / "results.json").read_text())
        assert 0 < report["train_seconds"] < 600
        # Rendered with the same SoundFont, the test clips are the same: no drop.
        other = json.loads((out / name / "other_soundfont.json").read_text())
        assert other["roc_auc"] == report["roc_auc"] and other["pr_auc"] == report["pr_auc"]
        row = (f"| {name} | {report['roc_auc']:.4f} | {report['pr_auc']:.4f} | "
               f"{report['train_seconds'] / 60:.1f} | {report['roc_auc']:.4f} | +0.0000 | "
               f"{experiments.SLIDES_ROC_AUC[name]:.2f} |")
        assert row in rows
    assert rows[-1].startswith("| baseline") and "| 0.8750 | 0.6250 |" in rows[-1]
    assert (out / "experiments.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    experiments.main(argv)  # everything finished: nothing trains again, the same table
    printed = capsys.readouterr().out
    assert "cnn_bof_transfer: reusing" in printed
    assert (out / "experiments.md").read_text().splitlines() == rows


def test_other_soundfont_config_renders_the_test_split_again(synth_tiny_dir, tmp_path):
    # With the default SoundFont under another name, the test split comes out sample for sample;
    # with another SoundFont, the same compositions and tags on other samples.
    copy = tmp_path / "copy.sf2"
    shutil.copyfile(synth.DEFAULT_SOUNDFONT, copy)
    config = synth_builder.other_soundfont_config(copy, base="tiny")
    assert config.name.startswith("tiny-copy-") and config.splits == ("test",)
    again, tags = tj_data.get_source("synth", "test", config=config, data_dir=synth_tiny_dir)
    test, test_tags = tj_data.get_source("synth", "test", config="tiny", data_dir=synth_tiny_dir)
    assert tags == test_tags and len(again) == len(test)
    for i in range(len(test)):
        np.testing.assert_array_equal(again[i]["audio"], test[i]["audio"])
        np.testing.assert_array_equal(again[i]["labels"], test[i]["labels"])
    not_a_soundfont = tmp_path / "notes.sf2"
    not_a_soundfont.write_text("not a SoundFont")
    with pytest.raises(ValueError, match=r"notes\.sf2.*not a SoundFont 2 file"):
        synth_builder.other_soundfont_config(not_a_soundfont)


def test_experiments_refuse_mistakes_before_the_first_run(trained_run, tmp_path, capsys):
    out = tmp_path / "experiments"
    shutil.copytree(trained_run, out / "cnn_lstm")
    results = (out / "cnn_lstm" / "results.json").read_bytes()
    base = ["--out", str(out), "--configs", "mfcc_bof,cnn_lstm"]
    for argv, expected in [
        (["--set", "num_epoch=1"], "unknown config field 'num_epoch' (did you mean 'num_epochs'?)"),
        (["--config.num_epoch=1"], "(did you mean 'num_epochs'?)"),
        (["--configs", "cnn_lstm,mfc_bof"], "unknown run 'mfc_bof' (did you mean 'mfcc_bof'?)"),
        (["--config.model.summary.k=many"], "--config.model.summary.k=many"),
        (["--config.dataset.name=mtat"], "unknown data set 'mtat'"),
        # mfcc_bof would train first, but the finished cnn_lstm run has other settings (the
        # tiny ones): refused before mfcc_bof starts, naming a field that differs.
        ([], "holds a run with other settings (batch_size: 4 -> 16"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            experiments.main(base + argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (argv, err)
    assert not (out / "mfcc_bof").exists()
    assert (out / "cnn_lstm" / "results.json").read_bytes() == results
