"""Multi-host training input: two `jax.distributed` processes on this machine's CPU each read
their own share of the training stream, by default (from `jax.process_index()`)."""

import json
import os
import socket
import subprocess
import sys

import multihost_host

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_each_process_reads_its_share_of_the_stream():
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": REPOSITORY, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    script = os.path.join(REPOSITORY, "tests", "multihost_host.py")
    hosts = [subprocess.Popen([sys.executable, script, str(port), str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    reports = []
    for host in hosts:
        out, err = host.communicate(timeout=300)
        assert host.returncode == 0, err[-2000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert [(r["process_index"], r["process_count"]) for r in reports] == [(0, 2), (1, 2)]
    # Each host's batches are the explicit shard of the one seeded stream; together they are
    # every example once.
    for index, report in enumerate(reports):
        assert report["ids"] == multihost_host.batch_ids(
            multihost_host.loader(shard_index=index, shard_count=2))
    assert sorted(reports[0]["ids"] + reports[1]["ids"]) == list(
        range(multihost_host.NUM_EXAMPLES))
