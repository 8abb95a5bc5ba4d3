"""Tracks that sound like a given one: cosine similarity of embeddings in an index.

    python -m tagjax.similar QUERY --index INDEX.npz [--top 10] [--tags 5] [--json]

QUERY is a path already in the index (its stored embedding is used, nothing is computed) or any
other audio file, which is embedded with the index's model (the pretrained model or work
directory the index remembers). The nearest tracks by cosine similarity of their embeddings are
listed with the top tags they share with the query: a recommendation that needs no listening
data, only the audio.
"""

import argparse
import json
import os
import sys
from collections.abc import Sequence

import numpy as np

from tagjax import tag as tagging
from tagjax.index import IndexMismatchError, TrackIndex


def cosine_similarity(queries: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of every query with every embedding.

    A zero vector has similarity 0 with everything (as in scikit-learn).

    Args:
      queries: `(M, D)`.
      embeddings: `(N, D)`.

    Returns:
      `(M, N)` float32 in [-1, 1].

    Raises:
      ValueError: mismatched shapes, or NaN or infinite values (as scikit-learn refuses them),
        naming the first such row.
    """
    queries = np.asarray(queries, np.float32)
    embeddings = np.asarray(embeddings, np.float32)
    if queries.ndim != 2 or embeddings.ndim != 2 or queries.shape[1] != embeddings.shape[1]:
        raise ValueError(f"expected queries (M, D) and embeddings (N, D), got {queries.shape} "
                         f"and {embeddings.shape}")
    for name, array in (("queries", queries), ("embeddings", embeddings)):
        bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
        if bad.size:
            raise ValueError(f"{name} holds NaN or infinite values in {bad.size} of "
                             f"{len(array)} rows (the first is row {bad[0]})")
    return _unit_rows(queries) @ _unit_rows(embeddings).T


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


def nearest(similarities: np.ndarray, top: int, exclude: int | None = None) -> np.ndarray:
    """Rows of the `top` highest similarities, highest first (ties in row order).

    Args:
      similarities: `(N,)`.
      top: how many rows to return (fewer if there are fewer).
      exclude: a row to leave out (the query itself).

    Returns:
      `(min(top, N'),)` int64 row indices.
    """
    order = np.argsort(-np.asarray(similarities), kind="stable")
    if exclude is not None:
        order = order[order != exclude]
    return order[:top]


def shared_top_tags(query_probabilities: np.ndarray, probabilities: np.ndarray,
                    tags: Sequence[str], k: int) -> list[str]:
    """The tags among both tracks' `k` most probable, in the query's order."""
    theirs = {tag for tag, _ in tagging.top_tags(probabilities, tags, k)}
    return [tag for tag, _ in tagging.top_tags(query_probabilities, tags, k) if tag in theirs]


def _query(index: TrackIndex, path: str, args) -> tuple[np.ndarray, np.ndarray, int | None, str]:
    """The query's embedding and probabilities, its row in the index (or None), and where they
    came from."""
    row = index.position(path)
    if row is not None and index.is_current(row):
        return index.embeddings[row], index.probabilities[row], row, "from the index"
    workdir, model_name = args.workdir, args.model
    if not (workdir or model_name):
        workdir, model_name = index.workdir or None, index.model_name or None
    if not (workdir or model_name):
        raise SystemExit(f"error: {path} is not in the index and the index names no model: "
                         f"pass --workdir or --model")
    args.hop = index.hop_seconds
    tagger = tagging.load_tagger(args, workdir=workdir, model_name=model_name)
    try:
        index.check_compatible(tagger)
    except IndexMismatchError as error:
        raise SystemExit(f"error: {args.index}: {error}") from None
    [result] = tagger.predict([path])
    if isinstance(result, tagging.TrackFailure):
        raise SystemExit(f"error: cannot use the query {result.message}")
    if not (np.isfinite(result.embedding).all() and np.isfinite(result.probabilities).all()):
        raise SystemExit(f"error: cannot use the query {path}: the model's embedding or tag "
                         f"probabilities of it are NaN or infinite")
    # A file in the index that has changed since is the same track: leave its old entry out.
    return result.embedding, result.probabilities, row, "embedded now"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tagjax.similar",
        description="List the tracks of an index (python -m tagjax.index) nearest to a query "
                    "track by cosine similarity of their embeddings, with their shared top tags.")
    parser.add_argument("query", metavar="QUERY", help="an audio file, in the index or not")
    parser.add_argument("--index", required=True, help="the index file (.npz)")
    parser.add_argument("--top", type=tagging.positive_int, default=10,
                        help="how many tracks to list (default 10)")
    parser.add_argument("--tags", type=tagging.positive_int, default=5,
                        help="top tags per track compared for the shared tags (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    tagging.add_model_arguments(parser)
    args = parser.parse_args(argv)

    try:
        index = TrackIndex.load(args.index)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    bad = index.non_finite_rows()
    if bad.size:
        # Similarities with them would print as nan; `index` embeds such tracks again.
        raise SystemExit(f"error: {args.index}: {bad.size} track(s) have NaN or infinite "
                         f"embeddings or tag probabilities (the first: {index.paths[bad[0]]}); "
                         f"run python -m tagjax.index on them with --out {args.index} to embed "
                         f"them again")
    query = os.path.abspath(args.query)
    embedding, probabilities, row, origin = _query(index, query, args)
    tags = [str(tag) for tag in index.tags]
    similarities = cosine_similarity(embedding[None], index.embeddings)[0]
    rows = nearest(similarities, args.top, exclude=row)
    neighbours = [{"path": str(index.paths[i]), "similarity": float(similarities[i]),
                   "shared_tags": shared_top_tags(probabilities, index.probabilities[i], tags,
                                                  args.tags)} for i in rows]
    query_tags = tagging.top_tags(probabilities, tags, args.tags)
    if args.json:
        print(json.dumps({"query": query, "tags": [{"tag": t, "probability": round(p, 6)}
                                                  for t, p in query_tags],
                          "neighbours": neighbours}, indent=2))
        return 0
    print(f"{query} ({origin}): " + "  ".join(f"{t} {p:.2f}" for t, p in query_tags))
    width = max([len("track"), *(len(n["path"]) for n in neighbours)])
    print(f"{'rank':>4}  {'cosine':>6}  {'track':<{width}}  shared top tags")
    for rank, neighbour in enumerate(neighbours, start=1):
        print(f"{rank:>4}  {neighbour['similarity']:>6.3f}  {neighbour['path']:<{width}}  "
              + ", ".join(neighbour["shared_tags"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
