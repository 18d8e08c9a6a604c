"""The ledger's spill: a local append-only JSON-lines file the writer puts records in when its queue
overflowed or the store failed, replayed into the stream in order when the store is back, then removed.

One file per writer process (``<prefix>.<pid>.<ns>.jsonl``, held under an exclusive ``flock``), so
the extproc workers never share one. A file whose lock nobody holds belongs to a process that died
before it could replay: the next writer that starts in the directory adopts and replays it first.
Each line is ``[writer id, batch number, fields]``: a batch is replayed whole under the tag it was
first sent with, and the store applies a tag once, so a batch whose first append did land (a reply
lost to a timeout) or a replay repeated after a crash is not written twice. Replay progress is
also kept in a sidecar (``<file>.done``: the byte offset replayed so far), so a restart does not
resend what was replayed.

Lines are flushed to the OS per batch (they survive the process, not a power loss: no fsync on the
writer's event loop). The file is bounded in bytes; what does not fit is refused and the caller
drops it loudly.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

log = logging.getLogger("sidegate.ledger")

Tag = tuple[str, int]
"""(writer id, batch number): the store applies a writer's batch once (``lua/ledger_append.lua``)."""


@dataclass(slots=True)
class SpillFile:
    path: Path
    lock: IO[bytes]
    offset: int = 0
    """Bytes already replayed into the store."""
    size: int = 0

    @property
    def done_path(self) -> Path:
        return self.path.with_name(self.path.name + ".done")


class Spill:
    def __init__(self, directory: str | Path, max_bytes: int, prefix: str = "ledger") -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.prefix = prefix
        self._files: list[SpillFile] = []
        """Files still to replay, oldest first; the last one may be ``_own`` (the one appended to)."""
        self._own: SpillFile | None = None
        self._adopted = False

    # -- state ------------------------------------------------------------------------------------
    @property
    def pending(self) -> bool:
        """Records are waiting in a spill file: new records must queue behind them (order)."""
        return any(f.offset < f.size for f in self._files)

    @property
    def bytes(self) -> int:
        """Bytes of the file this process appends to (what ``max_bytes`` bounds)."""
        return self._own.size if self._own else 0

    # -- files ------------------------------------------------------------------------------------
    def adopt(self) -> int:
        """Take over spill files of writers that died before replaying them; returns how many."""
        if self._adopted:
            return 0
        self._adopted = True
        if not self.dir.is_dir():  # made on the first spill, not by every writer that starts
            return 0
        found = 0
        for path in sorted(self.dir.glob(f"{self.prefix}.*.jsonl"), key=_mtime):
            if self._own is not None and path == self._own.path:
                continue
            try:
                fh = path.open("rb")
            except FileNotFoundError:  # replayed and removed by its writer meanwhile
                continue
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.stat(path).st_ino != os.fstat(fh.fileno()).st_ino:
                    raise FileNotFoundError(path)  # its writer removed it, then let go of the lock
            except OSError:
                fh.close()  # a live writer's own file, or one just removed
                continue
            f = SpillFile(path, fh, offset=_read_offset(path), size=path.stat().st_size)
            if f.offset >= f.size:  # replayed whole by a writer that died before removing it
                self._remove(f)
                continue
            self._files.insert(len(self._files) - (self._own is not None), f)
            found += 1
            log.warning("usage ledger: adopted spill file %s (%d bytes to replay)", path, f.size - f.offset)
        return found

    def _open_own(self) -> SpillFile:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{self.prefix}.{os.getpid()}.{time.time_ns()}.jsonl"
        fh = path.open("ab", buffering=0)  # unbuffered: a failed write leaves nothing queued to retry
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        own = SpillFile(path, fh)
        self._files.append(own)
        self._own = own
        return own

    # -- writing (the writer task) ----------------------------------------------------------------
    def append(self, tag: Tag, records: list[dict[str, str]]) -> int:
        """Append one batch (XADD field maps, under the writer's ``tag``) in order, flushed; returns
        how many fit the bound (the first ones: the rest are the caller's to drop)."""
        if not records:
            return 0
        own = self._own or self._open_own()
        lines = []
        room = self.max_bytes - own.size
        for fields in records:
            line = orjson.dumps([tag[0], tag[1], fields]) + b"\n"
            if len(line) > room:
                break
            lines.append(line)
            room -= len(line)
        if lines:
            data = memoryview(b"".join(lines))
            fh: IO[bytes] = own.lock
            try:
                done = 0
                while done < len(data):  # an unbuffered write may take part of it
                    done += fh.write(data[done:]) or 0
            except OSError:
                # A disk full mid-batch leaves part of a line: cut the file back to its last whole
                # batch, or the next batch's first line would be glued to it (unreadable, skipped)
                # and the file's size would no longer match what it holds.
                with contextlib.suppress(OSError):
                    os.ftruncate(fh.fileno(), own.size)
                raise
            own.size += len(data)
        return len(lines)

    # -- replay (the writer task) -----------------------------------------------------------------
    def read(self) -> tuple[SpillFile, Tag, list[dict[str, str]], int] | None:
        """The next batch to replay, whole (its tag makes a second append of it a no-op, so it is
        never split): (file, tag, records, offset after them), or None."""
        for f in self._files:
            if f.offset >= f.size:
                continue
            out: list[dict[str, str]] = []
            tag: Tag | None = None
            with f.path.open("rb") as fh:
                fh.seek(f.offset)
                end = f.offset
                while end < f.size:
                    line = fh.readline(f.size - end)
                    if not line.endswith(b"\n"):  # torn tail of a writer killed mid-write
                        log.error(
                            "usage ledger: spill %s: torn last line (%d bytes) skipped", f.path, len(line)
                        )
                        end = f.size
                        break
                    try:
                        writer, seq, fields = orjson.loads(line)
                    except (orjson.JSONDecodeError, ValueError, TypeError):
                        log.error("usage ledger: spill %s: unreadable line at byte %d skipped", f.path, end)
                        end += len(line)
                        continue
                    if tag is not None and (writer, seq) != tag:
                        break  # the next batch
                    tag = (writer, seq)
                    out.append(fields)
                    end += len(line)
            return f, tag or ("", 0), out, end
        return None

    def commit(self, f: SpillFile, offset: int) -> None:
        """The store took the records up to ``offset``: remember it; remove a fully replayed file."""
        f.offset = offset
        if f.offset < f.size:
            tmp = f.done_path.with_name(f.done_path.name + ".tmp")
            tmp.write_text(str(offset))
            os.replace(tmp, f.done_path)
            return
        self._files.remove(f)
        if f is self._own:
            self._own = None
        self._remove(f)

    @staticmethod
    def _remove(f: SpillFile) -> None:
        for p in (f.done_path, f.path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        f.lock.close()  # after the unlink: no other writer adopts a file we are removing

    def close(self) -> None:
        """Release the locks (files still pending stay for the next writer to adopt)."""
        for f in self._files:
            f.lock.close()
        self._files.clear()
        self._own = None
        self._adopted = False


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _read_offset(path: Path) -> int:
    try:
        return int(path.with_name(path.name + ".done").read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0
