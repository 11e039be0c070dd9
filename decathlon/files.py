"""Writing a file so that a reader never sees half of it: write beside it, then rename.

Every module of the harness writes its files this way (the worker in ``worker.py`` keeps its
own copy: it runs standalone in adapter environments). The temporary name is hidden, unique to
the process and thread, and removed when writing fails.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yields a temporary path in ``path``'s folder; when the block ends without an exception,
    that file replaces ``path`` in one rename, otherwise it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
