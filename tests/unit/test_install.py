"""The installed environment: no module two distributions ship is left in the wrong one's version.

xds-protos carries its own copies of opentelemetry-proto's and googleapis-common-protos' generated
modules; scripts/bootstrap reinstalls the owners last so theirs win whatever pip's order was.
"""

from __future__ import annotations

import base64
import hashlib
from collections import defaultdict
from importlib.metadata import distributions
from pathlib import Path

# Which distribution's copy must be on disk when two ship the same file.
OWNERS = ("opentelemetry-proto", "googleapis-common-protos")


def _hash(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def test_shared_protobuf_modules_are_their_owners_copies() -> None:
    shipped: dict[str, dict[str, tuple[Path, str]]] = defaultdict(dict)
    for dist in distributions():
        name = dist.metadata["Name"].lower()
        for f in dist.files or ():
            if f.hash is None or not str(f).endswith("_pb2.py"):
                continue
            shipped[str(f)][name] = (Path(str(f.locate())), f"{f.hash.mode}={f.hash.value}")
    wrong = []
    for rel, by in shipped.items():
        owner = next((o for o in OWNERS if o in by), None)
        if owner is None or len(by) < 2:
            continue
        path, want = by[owner]
        if _hash(path) != want:
            wrong.append(f"{rel} (not {owner}'s copy)")
    assert not wrong, "reinstall the owners (scripts/bootstrap does): " + ", ".join(sorted(wrong)[:10])
    # The import the OTLP exporter needs, which xds-protos' copy lacks.
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope  # noqa: F401
