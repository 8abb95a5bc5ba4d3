"""Zero-shot tagging: a published model scored on a data set it was not trained on, no training.

    python -m tagjax.zeroshot [--model musicnn-mtt] [--dataset synth] [--dataset-config default]
        [--split test] [--manual-dir DIR] [--data-dir DIR] [--out zeroshot.json]

The data set's tags that the model also predicts (by name, or through `SYNONYMS`) are scored
with the model's probability for them: per-tag and macro ROC-AUC and PR-AUC over the shared tags
(`tj.metrics.tagging_report`, equal to scikit-learn's), each track tagged whole as
`tj.Tagger.pretrained` tags it. It says how much of a data set a published model already knows,
the baseline any transfer-learning run has to beat.

On `synth` with `musicnn-mtt`, 29 of synth's 32 tags are among MagnaTagATune's top 50; organ,
bass and jazz are not.
"""

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence

import numpy as np

from tagjax import cli
from tagjax.data import decode_pool

# A data set's tag -> the model tags that mean it, used where the model lacks the tag's own
# name; the tag's score is the largest of their probabilities. MagnaTagATune and the Million
# Song Dataset spell some tags in several ways (its annotators' words, Last.fm's).
SYNONYMS = {
    "classical": ("classical", "classic"),
    "choir": ("choir", "choral"),
    "beat": ("beat", "beats"),
    "metal": ("metal", "heavy metal"),
    "electronic": ("electronic", "electronica", "electro"),
    "vocal": ("vocal", "vocals", "singing", "voice"),
    "female vocal": ("female vocal", "female", "woman", "female voice", "female vocalists",
                     "female vocalist"),
    "male vocal": ("male vocal", "male", "man", "male voice", "male vocalists"),
}


def tag_mapping(dataset_tags: Sequence[str],
                model_tags: Sequence[str]) -> dict[str, list[int]]:
    """`{data set tag: [model tag columns]}` for the data set tags the model predicts: the same
    name (case-insensitive) when the model has it, else its `SYNONYMS`, else the model tags
    spelt the same but for spaces and punctuation (`new age` for `newage`, `Hip-Hop` for
    `hiphop`); tags with no match are left out. MTG-Jamendo's category (`genre---rock`) is not
    part of the name."""
    columns = {tag.lower(): i for i, tag in enumerate(model_tags)}
    mapping = {}
    for tag in dataset_tags:
        name = tag.rsplit("---", 1)[-1].lower()
        if name in columns:
            mapping[tag] = [columns[name]]
            continue
        found = sorted({columns[other] for other in SYNONYMS.get(name, ()) if other in columns})
        if not found:
            found = [i for i, model_tag in enumerate(model_tags)
                     if _squashed(model_tag) == _squashed(name)]
        if found:
            mapping[tag] = found
    return mapping


def _squashed(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def mapped_scores(probabilities: np.ndarray, mapping: dict[str, list[int]]) -> np.ndarray:
    """`(N, num model tags)` probabilities -> `(N, len(mapping))`, each data set tag's the
    largest of its model tags'."""
    return np.stack([probabilities[:, cols].max(axis=1) for cols in mapping.values()], axis=1)


_TRACKS_AT_ONCE = 256


def shared_tag_scores(tagger, source, tags: Sequence[str], *,
                      progress: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    """The labels and the model's scores of a data set's tags that the model predicts.

    Args:
      tagger: a `tj.Tagger` (of a pretrained model, say).
      source: a data source of examples with `audio` (int16) and `labels`.
      tags: the data set's tag names, in label order.

    Returns:
      `labels (N, S)`, `scores (N, S)` for the `S` shared tags, and the mapping
      `{data set tag: [model tag columns]}` in that column order.
    """
    from tagjax.data import schema

    mapping = tag_mapping(tags, tagger.tags)
    if not mapping:
        raise ValueError(f"the model predicts none of the data set's tags: {list(tags)}")
    labels, probabilities = [], []
    for start in range(0, len(source), _TRACKS_AT_ONCE):  # memory bounded by a block of tracks
        examples = [source[i] for i in range(start, min(start + _TRACKS_AT_ONCE, len(source)))]
        labels.extend(example["labels"] for example in examples)
        probabilities.append(tagger.tag([schema.int16_to_audio(e["audio"]) for e in examples],
                                        progress=progress))
    labels = np.stack(labels)[:, [list(tags).index(tag) for tag in mapping]]
    return labels, mapped_scores(np.concatenate(probabilities), mapping), mapping


def zero_shot(model_name: str, dataset: str, split: str, *, dataset_config: str | None = None,
              batch_size: int | None = None, progress: bool = False, **source_kwargs) -> dict:
    """Scores a pretrained model on a data set split without training.

    Args:
      source_kwargs: passed to `tj.data.get_source` (`data_dir`, `manual_dir`, ...).

    Returns:
      `zero_shot_report`'s, plus `dataset`, `split`, `skipped_files` (the files the data set
      left out when it was built, every split's) and `skipped_files_listed_in` (its
      `metadata.json`).
    """
    import tagjax as tj

    kwargs = dict(source_kwargs)
    if dataset_config:
        kwargs["config"] = dataset_config
    source, tags = tj.data.get_source(dataset, split, **kwargs)
    report = zero_shot_report(model_name, source, tags, batch_size=batch_size, progress=progress)
    report.update(dataset=dataset, split=split,
                  **decode_pool.skipped_files_record(source.dataset_info))
    return report


def zero_shot_report(model_name: str, source, tags: Sequence[str], *,
                     batch_size: int | None = None, progress: bool = False) -> dict:
    """Scores a pretrained model on the examples of `source` (tags `tags`), each track whole.

    Returns:
      `tagging_report` over the shared tags, plus `model`, `mapping` (data set tag -> model
      tags) and `unmatched` (data set tags the model does not predict).
    """
    import tagjax as tj
    from tagjax import metrics

    tagger = tj.Tagger.pretrained(model_name, batch_size=batch_size)
    labels, scores, mapping = shared_tag_scores(tagger, source, tags, progress=progress)
    report = metrics.tagging_report(labels, scores, list(mapping))
    report.update(model=model_name,
                  mapping={tag: [tagger.tags[c] for c in cols] for tag, cols in mapping.items()},
                  unmatched=[tag for tag in tags if tag not in mapping])
    return report


def format_report(report: dict) -> str:
    width = max([16, *map(len, report["per_tag"])])  # MTG-Jamendo's `instrument---...` too
    lines = [f"{report['model']} on {report['dataset']} {report['split']} "
             f"({report['num_examples']} tracks), zero-shot over {len(report['mapping'])} shared "
             f"tags: macro ROC-AUC {report['roc_auc']:.4f}, PR-AUC {report['pr_auc']:.4f}",
             f"{'tag':<{width}} {'ROC-AUC':>8} {'PR-AUC':>8}  model tags"]
    for tag, scores in sorted(report["per_tag"].items(), key=lambda kv: -np.nan_to_num(
            kv[1]["roc_auc"], nan=-1)):
        lines.append(f"{tag:<{width}} {scores['roc_auc']:>8.4f} {scores['pr_auc']:>8.4f}  "
                     + ", ".join(report["mapping"][tag]))
    if report["excluded_tags"]:
        lines.append("left out (one class only in the split): "
                     + ", ".join(report["excluded_tags"]))
    if report["unmatched"]:
        lines.append("not predicted by the model: " + ", ".join(report["unmatched"]))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tagjax.zeroshot",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="musicnn-mtt", help="a pretrained model's name")
    parser.add_argument("--dataset", default="synth")
    parser.add_argument("--dataset-config", default=None, help="the data set's config")
    parser.add_argument("--split", default="test")
    parser.add_argument("--manual-dir", default=None,
                        help="magnatagatune, jamendo: the folder of the files downloaded by hand")
    parser.add_argument("--data-dir", default=None, help="where prepared data sets live")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--out", help="also write the report as JSON here")
    args = parser.parse_args(argv)
    from tagjax.models.pretrained import UnknownPretrainedError

    if args.out and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise SystemExit(f"error: the folder of --out {args.out} does not exist")
    if args.manual_dir and not os.path.isdir(os.path.expanduser(args.manual_dir)):
        raise SystemExit(f"error: --manual-dir {args.manual_dir} is not a folder")
    try:
        report = zero_shot(args.model, args.dataset, args.split,
                           dataset_config=args.dataset_config, batch_size=args.batch_size,
                           progress=None, **{key: value for key, value in (
                               ("manual_dir", args.manual_dir), ("data_dir", args.data_dir))
                               if value})
    except (UnknownPretrainedError, ValueError, FileNotFoundError) as error:
        hint = (" (here: --manual-dir DIR)" if isinstance(error, FileNotFoundError)
                and not args.manual_dir else "")
        raise SystemExit(f"error: {error}{hint}") from None
    print(format_report(report))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return cli.skipped_files_status(report)


if __name__ == "__main__":
    sys.exit(main())
