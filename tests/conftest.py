import fcntl
import getpass
import os
import shutil
import sys
import tempfile

import pytest
import threadpoolctl

# Tests run on the CPU with 4 virtual devices so data-parallel code can be checked without a GPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Many tests compile the same programs (each training run jits its own closures): a persistent
# compilation cache for the session compiles each once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="tagjax-jax-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# librosa compiles some numba kernels as it is imported and caches them (cache=True) beside its
# sources. xdist workers, importing it together on a fresh install, wrote the same entries at
# once and left one that crashed every later load (a segfault in librosa.yin's localmin), so
# each worker keeps its own numba cache, kept between runs.
if worker := os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(
        os.environ.get("NUMBA_CACHE_DIR",
                       os.path.join(tempfile.gettempdir(), f"tagjax-numba-{getpass.getuser()}")),
        worker)

sys.path.insert(0, os.path.dirname(__file__))


def _made_once(tmp_path_factory, name: str, make) -> str:
    """`make(path)` run once for the whole test session, shared by the xdist workers: the first
    worker to ask makes it, the others wait for it; then all read it. Returns the path."""
    # Under xdist every worker's base temp directory sits in the session's shared one.
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    path, done = shared / name, shared / f"{name}.done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released as the file closes
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)  # a worker that failed half way
            make(str(path))
            done.touch()
    return str(path)


@pytest.fixture(scope="session")
def synth_tiny_dir(tmp_path_factory):
    """A TFDS data dir holding the `synth/tiny` data set, built once per test session."""
    import tagjax as tj

    return _made_once(tmp_path_factory, "tfds",
                      lambda path: tj.data.get_builder("synth", config="tiny", data_dir=path))


@pytest.fixture(scope="session")
def tiny_config(synth_tiny_dir):
    """`tiny_config(name, **fields)`: config `name`'s tiny variant (`tagjax.configs`) reading
    `synth/tiny` from `synth_tiny_dir`, with `fields` set (`{"a.b": value}` as `**{...}`)."""
    from tagjax import configs

    def make(name: str, **fields):
        config = configs.get(name, "tiny")
        config.update_from_flattened_dict({"dataset.data_dir": synth_tiny_dir, **fields})
        return config

    return make


@pytest.fixture(scope="session")
def trained_run(tiny_config, tmp_path_factory):
    """The work directory of a tiny `cnn_lstm` run trained for two epochs on `synth/tiny`,
    trained once per test session (30 s on 2 cores), read only: tests that change a run copy it."""
    from tagjax import train

    return _made_once(tmp_path_factory, "trained_run",
                      lambda path: train.train_and_evaluate(tiny_config("cnn_lstm"), path))


@pytest.fixture
def one_thread_for_blas_and_openmp():
    """scikit-learn's OpenMP and BLAS thread pools (and the OpenBLAS behind JAX's CPU LAPACK)
    spin against XLA's threads on a small shared machine: 20 small KMeans fits took 11 s
    instead of 0.3 s here. One thread is plenty at these sizes."""
    with threadpoolctl.threadpool_limits(1):
        yield
