"""A ConfigMap volume laid out and updated the way the kubelet does it (its AtomicWriter), for tests
of the live config path without a cluster.

    dir/
      ..2026_12_07_12_30_00.000000001/sidegate.yaml   the current version's files
      ..data -> ..2026_12_07_12_30_00.000000001       swapped atomically (rename of ..data_tmp)
      sidegate.yaml -> ..data/sidegate.yaml           never touched after the first write

So a reader always sees one whole version; the visible name is a symlink whose own lstat() never
changes: a watcher must follow it (stat/read the content), and an inotify watch on the file misses
the swap. A subPath mount is a bind of one version's file, which is why the chart never uses one.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from pathlib import Path

_SEQ = itertools.count(1)


def write_configmap_dir(directory: Path, files: dict[str, str]) -> Path:
    """Publish `files` as the volume's new version (the first call creates the layout) and return
    the new version's directory. Old versions are removed, as the kubelet does."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime()) + f".{next(_SEQ):09d}"
    version = directory / f"..{stamp}"
    version.mkdir()
    for name, text in files.items():
        (version / name).write_text(text)
    data = directory / "..data"
    old = data.resolve() if data.is_symlink() else None
    tmp = directory / "..data_tmp"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(version.name)
    os.replace(tmp, data)  # rename(2): atomic, readers see the old or the new ..data, never none
    for name in files:
        visible = directory / name
        if not visible.is_symlink():
            visible.symlink_to(Path("..data") / name)
    if old is not None and old != version:
        shutil.rmtree(old, ignore_errors=True)
    return version
