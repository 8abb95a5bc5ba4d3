"""Comparing two builds of one data set (the local path and the Beam path) example by example."""

import numpy as np

# Beam's DirectRunner in two worker processes, as a local Beam build runs (`tagjax.data`'s
# `beam_options`), and in this process, which starts faster. Both decode in Beam for TFDS's
# local writer; with `tfds_beam_writer` TFDS's Beam writer writes, as on a cluster runner (most
# of that build's time is Beam turning TFDS's writer into its graph, whatever the runner).
BEAM_WORKER_PROCESSES = "--direct_num_workers=2 --direct_running_mode=multi_processing"
BEAM_IN_PROCESS = "--direct_num_workers=1 --direct_running_mode=in_memory"
BEAM_TFDS_WRITER = f"{BEAM_IN_PROCESS} --experiments=tfds_beam_writer"


def examples_by_id(builder, split):
    source = builder.as_data_source()[split]
    return {source[i]["id"].decode(): source[i] for i in range(len(source))}


def _records(builder, key):
    return sorted(builder.info.metadata.get(key, []), key=lambda r: (r["split"], r["key"]))


def assert_same_build(local, beam):
    """The two builds hold the same splits, examples (bit for bit) and reports."""
    assert set(beam.info.splits) == set(local.info.splits)
    for split in local.info.splits:
        expected, got = examples_by_id(local, split), examples_by_id(beam, split)
        assert set(got) == set(expected), split
        for key, example in expected.items():
            np.testing.assert_array_equal(got[key]["audio"], example["audio"], err_msg=key)
            np.testing.assert_array_equal(got[key]["labels"], example["labels"], err_msg=key)
    assert beam.info.metadata["tags"] == local.info.metadata["tags"]
    for key in ("skipped", "rescaled"):
        assert _records(beam, key) == _records(local, key), key
    assert beam.info.metadata.get("left_out_splits") == local.info.metadata.get("left_out_splits")
