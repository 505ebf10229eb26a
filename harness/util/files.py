"""Writing the harness's output files: whole or not at all."""
from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, *, mode: int = 0o644) -> Path:
    """Write `data` to a temporary file beside `path`, then rename it over `path`: a reader (the next night's
    job, a report generator, HAProxy loading a certificate) never sees half a file, even when the run is
    killed while writing. `mode` is set whatever the umask (0o600 for a private key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, mode)  # the umask may have narrowed it, or an old file widened it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
