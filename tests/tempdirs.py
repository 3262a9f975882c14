"""Temporary folders the local stack's PostgreSQL can use: under root it runs as `nobody`, which must traverse every
folder above its data, and pytest's tmp_path (like a TMPDIR below /root) sits in a 0700 folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def traversable_tempdir(prefix: str) -> Iterator[Path]:
    """A fresh 0755 folder under /tmp (whatever TMPDIR says), removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)
