"""Folders the process may not read or write, for the commands' permission tests.

Tests run as root here, and root ignores a folder's mode bits; then the system call that the
mode would have refused (`os.scandir` to read, `os.open` with `O_CREAT` to write) raises the
`PermissionError` the kernel gives other users, for that folder only.
"""

import contextlib
import errno
import os


def _permission_error(path) -> PermissionError:
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))


@contextlib.contextmanager
def unreadable(folder, monkeypatch):
    """`folder` cannot be listed while the context lasts."""
    folder = os.fspath(folder)
    if os.geteuid() != 0:
        os.chmod(folder, 0o000)
        try:
            yield
        finally:
            os.chmod(folder, 0o755)
        return
    scandir = os.scandir

    def refusing_scandir(path="."):
        if os.path.abspath(os.fspath(path)) == os.path.abspath(folder):
            raise _permission_error(path)
        return scandir(path)

    with monkeypatch.context() as patch:
        patch.setattr(os, "scandir", refusing_scandir)
        yield


@contextlib.contextmanager
def unwritable(folder, monkeypatch):
    """No file can be created in `folder` while the context lasts."""
    folder = os.fspath(folder)
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        try:
            yield
        finally:
            os.chmod(folder, 0o755)
        return
    open_ = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and os.path.dirname(os.path.abspath(os.fspath(path))) == \
                os.path.abspath(folder):
            raise _permission_error(path)
        return open_(path, flags, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(os, "open", refusing_open)
        yield
