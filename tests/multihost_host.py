"""One host of a two-process `jax.distributed` run on this machine's CPU (see test_multihost).

    python tests/multihost_host.py PORT PROCESS_ID

Prints, as JSON, this process's index and count and the example ids of the training batches
`train_loader` gives it by default (its share of the stream).
"""

import json
import sys

import jax
import numpy as np

from tagjax.data import pipeline

NUM_EXAMPLES = 20


def source():
    """Examples whose audio is their id (the crops then say which example they came from)."""
    return [{"audio": np.full(800, i, np.int16), "labels": np.zeros(3, np.uint8),
             "id": str(i).encode()} for i in range(NUM_EXAMPLES)]


def batch_ids(loader) -> list[int]:
    return [int(v) for batch in loader for v in np.round(batch["audio"][:, 0] * 32767)]


def loader(**shard):
    return pipeline.train_loader(source(), batch_size=2, crop_samples=400, seed=3, num_epochs=1,
                                 **shard)


if __name__ == "__main__":
    port, process_id = sys.argv[1], int(sys.argv[2])
    jax.config.update("jax_platforms", "cpu")
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    print(json.dumps({"process_index": jax.process_index(),
                      "process_count": jax.process_count(), "ids": batch_ids(loader())}))
