"""Which layer of a pretrained model makes the best embedding for similarity search.

    python benchmarks/embedding_choice.py [--model musicnn-mtt] [--splits train,valid,test]
        [--k 1,10] [--out benchmarks/results/embedding_choice.json]

Measured as nearest-neighbour tag agreement on `synth`, whose tags follow from how each clip was
composed (instruments, style, tempo, dynamics), so they are ground truth rather than crowd
labels. Every clip of the chosen splits is embedded with `tj.Tagger.pretrained(model,
embedding=...)` (the mean over its 3 s chunks, as `tagjax.index` stores it) and queries all the
others by cosine similarity (as `tagjax.similar` ranks them). Scores, over all queries:

- tag Jaccard@k: the mean Jaccard index of the query's tag set and each of its k nearest
  clips' (the share of tags they have in common);
- style precision@k: the share of the k nearest clips composed in the query's style (the set
  of synth's style tags a clip carries: classical, rock, metal, techno + dance + electronic...).

Candidates: "penultimate" (the 200-d hidden layer after its batch norm), "pooled" (the 1506-d
mean and max over frames of the mid-end features), "pooled_normalized" (the same standardised
by the head's first batch norm) and "tags" (the 50 tag probabilities). References: random
vectors (what unrelated clips share) and the MFCC mean and standard deviation per coefficient
(`benchmarks/synth_baseline.py`'s features, standardised), a timbre-only embedding.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
CANDIDATES = ("penultimate", "pooled", "pooled_normalized")
# synth's style tags; a clip's style is the set of these it carries (a style sets one or more).
STYLE_TAGS = ("classical", "rock", "metal", "pop", "techno", "dance", "electronic", "ambient",
              "new age", "indian", "country", "jazz")


def cosine_neighbours(embeddings: np.ndarray, k: int) -> np.ndarray:
    """`(n, k)` the rows of each row's k nearest others by cosine similarity."""
    from tagjax.similar import cosine_similarity

    similarities = cosine_similarity(embeddings, embeddings)
    np.fill_diagonal(similarities, -np.inf)
    return np.argsort(-similarities, axis=1, kind="stable")[:, :k]


def agreement(neighbours: np.ndarray, labels: np.ndarray, styles: np.ndarray) -> dict:
    """Tag Jaccard and style precision of each query's neighbours, averaged over queries."""
    query = labels[:, None, :].astype(bool)
    theirs = labels[neighbours].astype(bool)
    union = np.maximum((query | theirs).sum(-1), 1)
    jaccard = (query & theirs).sum(-1) / union
    same_style = styles[neighbours] == styles[:, None]
    return {"tag_jaccard": float(jaccard.mean()), "style_precision": float(same_style.mean())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="musicnn-mtt")
    parser.add_argument("--splits", default="train,valid,test")
    parser.add_argument("--k", default="1,10")
    parser.add_argument("--out", default=os.path.join(RESULTS, "embedding_choice.json"))
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.k.split(",")]

    import tagjax as tj
    from tagjax.data import schema

    audio, labels = [], []
    for split in args.splits.split(","):
        source, tags = tj.data.get_source("synth", split)
        for i in range(len(source)):
            example = source[i]
            audio.append(schema.int16_to_audio(example["audio"]))
            labels.append(example["labels"])
    labels = np.stack(labels)
    patterns = labels[:, [tags.index(style) for style in STYLE_TAGS]]
    _, styles = np.unique(patterns, axis=0, return_inverse=True)
    print(f"{len(audio)} synth clips, {len(tags)} tags, {styles.max() + 1} styles",
          file=sys.stderr)

    embeddings, seconds = {}, {}
    for candidate in CANDIDATES:
        tagger = tj.Tagger.pretrained(args.model, embedding=candidate)
        start = time.perf_counter()
        results = list(tagger.predict(audio))
        seconds[candidate] = time.perf_counter() - start
        embeddings[candidate] = np.stack([r.embedding for r in results])
        if candidate == "penultimate":
            embeddings["tags"] = np.stack([r.probabilities for r in results])
    mfcc = np.concatenate([
        np.concatenate([m.mean(axis=1), m.std(axis=1)], axis=-1)
        for m in (np.asarray(tj.features.mfcc(np.stack(audio[i:i + 64]), n_mfcc=20))
                  for i in range(0, len(audio), 64))])
    embeddings["mfcc mean+std (reference)"] = (mfcc - mfcc.mean(0)) / (mfcc.std(0) + 1e-9)
    embeddings["random (reference)"] = np.random.default_rng(0).standard_normal(
        (len(audio), 200))

    rows = {}
    for name, vectors in embeddings.items():
        rows[name] = {"dim": int(vectors.shape[1])}
        for k in ks:
            scores = agreement(cosine_neighbours(vectors, k), labels, styles)
            rows[name] |= {f"{key}@{k}": value for key, value in scores.items()}
    header = ["embedding", "dim", *(f"{m}@{k}" for k in ks
                                    for m in ("tag_jaccard", "style_precision"))]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for name, row in rows.items():
        print(" | ".join([name, str(row["dim"]),
                          *(f"{row[column]:.3f}" for column in header[2:])]))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"model": args.model, "clips": len(audio), "splits": args.splits,
                   "rows": rows, "embedding_seconds": seconds}, f, indent=2)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
