"""One way to write a file a user keeps: all of it or none of it.

Every writer (GGUF files, voice states, audio, subtitles, registry metadata, plots) goes through
`atomic_write`, so an interrupted or failed write leaves whatever was at the destination untouched;
a folder made as one result (a reference dump) goes through `atomic_folder`.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yields an empty temporary file beside `path` to write. When the block ends normally the file is
    flushed to disk (a power cut must not leave an empty file behind the rename) and renamed over
    `path`; when it raises, the temporary file is removed and `path` is as it was.

    The temporary file lives in the destination's folder (same filesystem: the rename is atomic) and gets
    the permissions a plain `open()` would have given the destination."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    tmp = Path(name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        os.close(fd)
        yield tmp
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yields an empty temporary folder beside `path` to fill; when the block ends normally it becomes
    `path`, when it raises it is removed. If another process finished the same folder first, theirs is
    kept and ours removed: the folder is one result, whoever made it."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part"))
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not path.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
