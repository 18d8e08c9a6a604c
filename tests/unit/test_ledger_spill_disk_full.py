"""The spill when the disk fills mid-batch: the part of the batch that reached the file is cut off
again, so the next batch starts on a line of its own and the file replays whole, in order."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from sidegate.features.ledger.spill import Spill


class _DiskFullAfterHalf:
    """The spill file's handle on a disk that fills up: half the write lands, then ENOSPC."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def write(self, data: bytes) -> int:
        os.write(self.real.fileno(), bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return int(self.real.fileno())

    def close(self) -> None:
        self.real.close()


def _fields(i: int) -> dict[str, str]:
    return {"request_id": f"req-{i}", "tenant": "acme"}


def test_a_write_cut_short_by_a_full_disk_leaves_no_torn_line(tmp_path: Path) -> None:
    spill = Spill(tmp_path, max_bytes=1 << 20)
    assert spill.append(("w", 1), [_fields(0), _fields(1)]) == 2
    own = spill._own
    assert own is not None
    real, own.lock = own.lock, _DiskFullAfterHalf(own.lock)
    with pytest.raises(OSError):
        spill.append(("w", 2), [_fields(2), _fields(3)])  # the writer drops these, counted
    own.lock = real
    assert spill.append(("w", 3), [_fields(4)]) == 1
    assert own.size == own.path.stat().st_size

    replayed: list[tuple[tuple[str, int], list[str]]] = []
    for _ in range(5):
        got = spill.read()
        if got is None:
            break
        f, tag, fields, end = got
        replayed.append((tag, [x["request_id"] for x in fields]))
        spill.commit(f, end)
    assert replayed == [(("w", 1), ["req-0", "req-1"]), (("w", 3), ["req-4"])]
    spill.close()
