"""Building TFDS data sets larger than 1 GB without TensorFlow installed.

TFDS (4.9) writes ArrayRecord without TensorFlow, except in one place: while writing a split,
its `Shuffler` keeps the serialized examples in memory up to 1 GB and then spills them into
1,000 temporary bucket files through `tf.io.gfile`, which raises `ModuleNotFoundError` when
TensorFlow is absent. MagnaTagATune (about 20 GB as int16) and many users' folders are past that
limit. `local_shuffle_files()` lends the shuffler plain local files for the duration of a build
(the buckets live in the data set's own, local, folder) and lifts the soft limit on open files
to what 1,000 buckets need, as TFDS itself does when TensorFlow reports too many open files.
With TensorFlow installed it changes nothing.
"""

import contextlib
import importlib.util
import os
import types


class _NeverRaised(Exception):
    """Stands in for `tf.errors.ResourceExhaustedError`, which plain files never raise."""


# The part of `tf` that `tensorflow_datasets.core.shuffle` uses, on local files.
_LOCAL_FILES = types.SimpleNamespace(
    io=types.SimpleNamespace(
        gfile=types.SimpleNamespace(GFile=open, exists=os.path.exists, remove=os.remove)
    ),
    errors=types.SimpleNamespace(ResourceExhaustedError=_NeverRaised),
)

# Open files a build needs: TFDS's 1,000 buckets and some to spare.
_OPEN_FILES_NEEDED = 4096


@contextlib.contextmanager
def local_shuffle_files():
    """Within this context, TFDS builds spill their shuffle buffers to local files.

    Raises:
      OSError: (inside the context, from the build) the hard limit on open files is too low
        for TFDS's 1,000 bucket files.
    """
    if importlib.util.find_spec("tensorflow") is not None:
        yield
        return
    from tensorflow_datasets.core import shuffle

    original = shuffle.tf
    shuffle.tf = _LOCAL_FILES
    with _open_files_limit(_OPEN_FILES_NEEDED):
        try:
            yield
        finally:
            shuffle.tf = original


@contextlib.contextmanager
def _open_files_limit(wanted: int):
    """Raises the soft limit on open files towards `wanted` (never past the hard limit)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    else:
        yield
