"""The kubelet's ConfigMap update, reproduced (tests/k8s_volume.py): what a replica re-reading its
config file every second (docs/control-plane.md, seeding) sees when `kubectl edit configmap` or
`helm upgrade` changes the mounted directory."""

from __future__ import annotations

import copy
import os
import threading
import time
from pathlib import Path

import yaml
from k8s_volume import write_configmap_dir

from sidegate import config
from sidegate.config import routing

BASE = {
    "providers": {
        "openai": {"api": "openai", "base_url": "https://api.openai.com", "api_key_env": "OPENAI_API_KEY"},
        "anthropic": {
            "api": "anthropic",
            "base_url": "https://api.anthropic.com",
            "api_key_env": "ANTHROPIC_API_KEY",
        },
    },
    "models": {"gpt-4o-mini": {"routes": [{"provider": "openai"}]}},
}


def _changed_chain() -> dict:
    data = copy.deepcopy(BASE)
    data["models"]["gpt-4o-mini"]["routes"] = [
        {"provider": "anthropic", "model": "claude-3-5-haiku-latest"},
        {"provider": "openai"},
    ]
    return data


def test_swap_changes_what_the_visible_path_reads(tmp_path: Path):
    first = write_configmap_dir(tmp_path, {"sidegate.yaml": yaml.safe_dump(BASE)})
    path = tmp_path / "sidegate.yaml"
    before = config.load(path, env={})
    link_before, target_before = os.lstat(path), os.stat(path)

    second = write_configmap_dir(tmp_path, {"sidegate.yaml": yaml.safe_dump(_changed_chain())})
    after = config.load(path, env={})

    assert [r.provider for r in after.models["gpt-4o-mini"].routes] == ["anthropic", "openai"]
    # What seeding compares (contract 4): the routing document's digest moved.
    assert routing.digest(routing.routing_doc(before)) != routing.digest(routing.routing_doc(after))
    # The visible name is the same symlink (its own lstat is unchanged: a watcher must follow it);
    # what it resolves to is a new file in a new version directory; the old version is gone.
    link_after = os.lstat(path)
    assert (link_after.st_ino, link_after.st_mtime_ns) == (link_before.st_ino, link_before.st_mtime_ns)
    assert os.stat(path).st_ino != target_before.st_ino
    assert path.resolve().parent == second and not first.exists()
    assert os.readlink(tmp_path / "..data") == second.name


def test_a_reader_never_sees_a_partial_file_during_swaps(tmp_path: Path):
    texts = [yaml.safe_dump(BASE), yaml.safe_dump(_changed_chain())]
    write_configmap_dir(tmp_path, {"sidegate.yaml": texts[0]})
    path = tmp_path / "sidegate.yaml"
    stop = threading.Event()

    def swap() -> None:
        for i in range(200):
            if stop.is_set():
                return
            write_configmap_dir(tmp_path, {"sidegate.yaml": texts[(i + 1) % 2]})

    t = threading.Thread(target=swap)
    t.start()
    seen = set()
    deadline = time.monotonic() + 10
    try:
        while t.is_alive() and time.monotonic() < deadline:
            try:
                text = path.read_text()
            except FileNotFoundError:  # the old version directory removed between resolve and open
                continue
            assert text in texts
            seen.add(texts.index(text))
    finally:
        stop.set()
        t.join(10)
    assert seen, "the reader read at least one whole version"
