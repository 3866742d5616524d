"""The feature cache: a hit gives the numbers of a miss; any changed input misses; a damaged entry is
reported, removed and recomputed, never used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from algonauts_fixture import make_release

from rsabench import features
from rsabench.feature_cache import FeatureCache
from rsabench.plugins import get_plugins
from rsabench.runner import RunOptions, Session

LAYERS = ("features.1", "features.4")


class Notes:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def stage(self, description, total):
        import contextlib

        return contextlib.nullcontext(lambda n: None)

    def note(self, message: str) -> None:
        self.messages.append(message)


def run(
    tmp_path: Path, cache_dir: Path | None, objective: str = "frozen", dataset: str = "kriegeskorte2008", **options
):
    """One cell in a fresh session (nothing shared in memory with an earlier call); returns its record."""
    opts = {"weights": "random", "image_size": 32, "epochs": 1, "layers": LAYERS, **options}
    if cache_dir is None:
        opts["no_cache"] = True
    else:
        opts["cache_dir"] = str(cache_dir)
    reporter = Notes()
    session = Session(get_plugins(), RunOptions(**opts), reporter=reporter, force=True)
    target = ["IT"] if dataset == "algonauts-fmri" else []
    [cell] = session.plan([dataset], ["alexnet"], [objective], [0], target, tmp_path / "runs")
    record = session.run(cell)
    return record, reporter.messages


def numbers(record: dict) -> tuple:
    return record["scores"], record["per_layer_final"], record["curves"]["validation"], record["selection"]


@pytest.mark.parametrize("objective", ["frozen", "dissim"])
def test_a_hit_gives_the_numbers_of_a_miss(tmp_path, objective):
    uncached, _ = run(tmp_path, None, objective)
    first, _ = run(tmp_path, tmp_path / "cache", objective)
    again, _ = run(tmp_path, tmp_path / "cache", objective)
    assert again["manifest"]["feature_cache"]["misses"] == 0 and again["manifest"]["feature_cache"]["hits"] >= 1
    assert numbers(uncached) == numbers(first) == numbers(again)  # exact: the cache stores float32 RDMs bit for bit


def test_frozen_and_epoch_0_of_training_share_one_forward_pass(tmp_path, monkeypatch):
    calls = []
    real = features.extract_rdms
    monkeypatch.setattr(features, "extract_rdms", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    run(tmp_path, tmp_path / "cache", "frozen")
    frozen_calls = list(calls)
    assert len(frozen_calls) == 2  # validation and test images of the one group
    calls.clear()
    record, _ = run(tmp_path, tmp_path / "cache", "dissim", epochs=1)
    # epoch-0 validation came from the cache: one validation pass after epoch 1, then one test pass
    # (final = best, or best = epoch 0 from the cache)
    assert record["manifest"]["feature_cache"]["hits"] >= 1
    assert len(calls) == 2


def test_each_changed_input_misses(tmp_path):
    cache = tmp_path / "cache"
    run(tmp_path, cache)
    assert run(tmp_path, cache)[0]["manifest"]["feature_cache"]["misses"] == 0
    assert run(tmp_path, cache, image_size=40)[0]["manifest"]["feature_cache"]["hits"] == 0
    assert run(tmp_path, cache, split_seed=1)[0]["manifest"]["feature_cache"]["hits"] == 0  # other images

    built = get_plugins().backbones.get("alexnet")().build(weights="random", seed=0)
    weights = tmp_path / "w.pt"
    torch.save(built.model.state_dict(), weights)
    # the same tensors from a file are the same network: the key is the state's digest, so this is served
    assert run(tmp_path, cache, weights=str(weights))[0]["manifest"]["feature_cache"]["misses"] == 0
    state = built.model.state_dict()
    state["features.0.bias"] = state["features.0.bias"] + 1.0
    torch.save(state, weights)
    assert run(tmp_path, cache, weights=str(weights))[0]["manifest"]["feature_cache"]["hits"] == 0


def test_a_changed_image_misses(tmp_path):
    make_release(tmp_path, "fmri", {"92": 20, "78": 10})
    cache = tmp_path / "cache"
    run(tmp_path, cache, dataset="algonauts-fmri", data_dir=str(tmp_path))
    assert (
        run(tmp_path, cache, dataset="algonauts-fmri", data_dir=str(tmp_path))[0]["manifest"]["feature_cache"]["misses"]
        == 0
    )
    image = tmp_path / "algonauts2019/Training_Data/92_Image_Set/92images/image_05.jpg"
    image.write_bytes(image.read_bytes() + b"\0")
    assert (
        run(tmp_path, cache, dataset="algonauts-fmri", data_dir=str(tmp_path))[0]["manifest"]["feature_cache"]["hits"]
        == 0
    )


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty", "list-header"])
def test_a_damaged_entry_is_reported_once_removed_and_recomputed(tmp_path, damage):
    cache = tmp_path / "cache"
    good, _ = run(tmp_path, cache)
    victim = FeatureCache(cache).entries()[0]
    data = bytearray(victim.read_bytes())
    if damage == "truncate":
        data = data[: len(data) - 7]
    elif damage == "flip":
        data[-3] ^= 0x40  # a payload byte: the file still parses, its digest no longer matches
    elif damage == "garbage":
        data = bytearray(b"not a safetensors file at all")
    elif damage == "list-header":
        data = bytearray((5).to_bytes(8, "little") + b"[1,2]")
    else:
        data = bytearray()
    victim.write_bytes(bytes(data))
    again, notes = run(tmp_path, cache)
    assert numbers(again) == numbers(good)
    damaged = [m for m in notes if "feature cache entry" in m]
    assert len(damaged) == 1 and str(victim) in damaged[0] and "recomputed" in damaged[0], notes
    assert again["manifest"]["feature_cache"]["misses"] >= 1
    third, notes = run(tmp_path, cache)
    assert third["manifest"]["feature_cache"]["misses"] == 0 and not notes  # rewritten, sound again


def read_only(monkeypatch, cache: Path) -> None:
    """Simulate a read-only cache folder (the tests may run as root, which chmod does not stop)."""
    import errno

    from rsabench import feature_cache, records

    real_open = records.atomic_open

    def refuse(path, *args, **kwargs):
        if str(path).startswith(str(cache)):
            raise PermissionError(errno.EROFS, "Read-only file system")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(records, "atomic_open", refuse)
    monkeypatch.setattr(feature_cache, "_remove", refuse)


def test_an_unwritable_cache_is_noted_once_and_changes_no_number(tmp_path, monkeypatch):
    good, _ = run(tmp_path, None)
    read_only(monkeypatch, tmp_path / "cache")
    record, notes = run(tmp_path, tmp_path / "cache")
    assert numbers(record) == numbers(good)
    assert len(notes) == 1 and "cannot write (Read-only file system)" in notes[0], notes


def test_a_corrupt_entry_in_a_read_only_cache_is_reported_once(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    good, _ = run(tmp_path, cache)
    victim = FeatureCache(cache).entries()[0]
    victim.write_bytes(b"garbage")
    read_only(monkeypatch, cache)
    again, notes = run(tmp_path, cache)
    later, more = run(tmp_path, cache)  # another session in this process: the same damaged file, not again
    assert numbers(again) == numbers(later) == numbers(good)
    assert len(notes) == 1 and str(victim) in notes[0] and "nothing is written to this cache" in notes[0], notes
    assert more == [] and victim.read_bytes() == b"garbage"


def test_a_folder_in_an_entry_place_is_reported_once_and_removed(tmp_path, capsys):
    cache = tmp_path / "cache"
    good, _ = run(tmp_path, cache)
    victim = FeatureCache(cache).entries()[0]
    victim.unlink()
    (victim / "inside").mkdir(parents=True)
    (victim / "inside" / "file").write_text("x")
    again, notes = run(tmp_path, cache)
    assert numbers(again) == numbers(good)
    assert len(notes) == 1 and f"{victim}: a folder, not an entry file; removed and recomputed" in notes[0], notes
    assert victim.is_file()  # removed, then the recomputed entry written in its place
    third, notes = run(tmp_path, cache)
    assert notes == [] and third["manifest"]["feature_cache"]["misses"] == 0

    from rsabench.cli import main

    victim.unlink()
    victim.mkdir()  # `cache clear` removes what is in an entry's place too
    n = len(FeatureCache(cache).entries())
    main(["cache", "clear", "--cache-dir", str(cache)])
    assert f"removed {n + 1} file(s)" in capsys.readouterr().out and not victim.exists()


def test_a_folder_that_cannot_be_removed_is_reported_once_across_cells(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    run(tmp_path, cache)
    victim = FeatureCache(cache).entries()[0]
    victim.unlink()
    victim.mkdir()
    read_only(monkeypatch, cache)
    _, first = run(tmp_path, cache)
    _, second = run(tmp_path, cache)
    assert len(first) == 1 and "a folder, not an entry file" in first[0] and second == [], (first, second)


def entry_of(tmp_path: Path, n: int = 6) -> tuple[FeatureCache, str, Path]:
    store = FeatureCache(tmp_path / "cache", note=(notes := []).append)
    store.notes = notes
    rdm = 1.0 - np.eye(n, dtype=np.float32)
    store.put(["a" * 64], rdm[None], {"what": "a test entry"})
    return store, "a" * 64, store._path("a" * 64)


@pytest.mark.parametrize("kind", ["fifo", "link-to-dev-zero", "link-to-an-entry", "oversized", "sparse-3-GiB"])
def test_an_entry_that_is_not_a_plain_file_of_its_size_is_refused_before_reading(tmp_path, monkeypatch, kind):
    import os
    import threading

    from rsabench.feature_cache import max_entry_bytes

    store, key, path = entry_of(tmp_path)
    sound = path.read_bytes()
    assert len(sound) < max_entry_bytes(6) <= len(sound) + (1 << 20) + 8  # the limit: the RDM, header + 1 MiB
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "link-to-dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "link-to-an-entry":
        (tmp_path / "elsewhere").write_bytes(sound)  # even a sound entry: a link is not the cache's own file
        path.symlink_to(tmp_path / "elsewhere")
    elif kind == "oversized":
        path.write_bytes(sound + b"\0" * (max_entry_bytes(6) + 1 - len(sound)))
    else:
        with open(path, "wb") as fh:
            fh.truncate(3 << 30)
    read = []
    real_bytes = FeatureCache._bytes
    monkeypatch.setattr(FeatureCache, "_bytes", lambda self, *a: read.append(a) or real_bytes(self, *a))
    result = []
    worker = threading.Thread(target=lambda: result.append(store.get([key], 6)), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "reading the entry hung"
    assert result == [None] and read == []  # refused on its lstat alone
    assert len(store.notes) == 1 and str(path) in store.notes[0] and "removed and recomputed" in store.notes[0]
    assert not os.path.lexists(path) and (kind != "link-to-an-entry" or (tmp_path / "elsewhere").read_bytes() == sound)


def test_a_swapped_in_fifo_is_refused_without_blocking(tmp_path, monkeypatch):
    """Replaced by a FIFO between the check and the open: the open does not wait for a writer."""
    import os

    store, key, path = entry_of(tmp_path)
    real_lstat = Path.lstat

    def lstat_then_swap(self):
        st = real_lstat(self)
        if self == path:
            self.unlink()
            os.mkfifo(self)
        return st

    monkeypatch.setattr(Path, "lstat", lstat_then_swap)
    assert store.get([key], 6) is None
    monkeypatch.setattr(Path, "lstat", real_lstat)
    assert len(store.notes) == 1 and "not a regular file" in store.notes[0] and not os.path.lexists(path)


def test_an_unreadable_cache_is_noted_once_and_switched_off(tmp_path, monkeypatch):
    import errno

    good, _ = run(tmp_path, None)
    cache = tmp_path / "cache"
    real_lstat = Path.lstat

    def denied(self):
        if str(self).startswith(str(cache)):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_lstat(self)

    monkeypatch.setattr(Path, "lstat", denied)
    record, notes = run(tmp_path, cache)
    _, more = run(tmp_path, cache)
    assert numbers(record) == numbers(good)
    assert len(notes) == 1 and f"feature cache {cache}: cannot read (Permission denied)" in notes[0], notes
    assert more == [] and not cache.exists()  # switched off: nothing written either


@pytest.mark.parametrize("where", ["afile", "afile/sub"])
@pytest.mark.parametrize("command", ["run", "cache-info", "cache-clear"])
def test_a_cache_dir_through_a_file_is_a_usage_error(tmp_path, capsys, where, command):
    from cli_helpers import run_cli

    (tmp_path / "afile").write_text("a file where the cache dir would be")
    cache = str(tmp_path / where)
    argv = {
        "run": ["run", "--weights", "random", "--image-size", "32", "--runs-dir", str(tmp_path / "runs")],
        "cache-info": ["cache", "info"],
        "cache-clear": ["cache", "clear"],
    }[command]
    code, out, err = run_cli(capsys, [*argv, "--cache-dir", cache])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "afile" in err and "is a file" in err, err
    assert not (tmp_path / "runs").exists()


def test_cache_info_and_clear(tmp_path, capsys):
    from rsabench.cli import main

    cache = tmp_path / "cache"
    run(tmp_path, cache)
    n = len(FeatureCache(cache).entries())
    assert n == 2 * len(LAYERS)  # validation and test images, each layer
    for argv in (["cache", "info", "--cache-dir", str(cache)], ["cache", "clear", "--cache-dir", str(cache)]):
        main(argv)  # returns normally on success (main exits only on errors)
    out = capsys.readouterr().out
    assert f"entries: {n} layer RDM(s)" in out and f"removed {n} file(s)" in out
    assert FeatureCache(cache).entries() == []


def test_one_entry_that_cannot_be_written_leaves_the_others_cached(tmp_path):
    store = FeatureCache(tmp_path, note=(notes := []).append)
    rdm = np.zeros((3, 3), dtype=np.float32)
    (tmp_path / "aa" / ("a" * 64 + ".safetensors")).mkdir(parents=True)  # a folder where entry a would go
    store.put(["a" * 64, "b" * 64], np.stack([rdm, rdm]), {})
    assert not store.unwritable and store.get(["b" * 64], 3) is not None
    assert len(notes) == 1 and "cannot write" in notes[0] and "not cached" in notes[0]


def test_cache_clear_removes_only_its_own_entries(tmp_path, capsys):
    from rsabench.cli import main

    cache = tmp_path / "cache"
    run(tmp_path, cache)
    entries = FeatureCache(cache).entries()
    strangers = [cache / "ab", cache / "xy" / "model.safetensors", cache / "xy" / ".notes.tmp", cache / "keep.txt"]
    strangers[0].mkdir()
    strangers[1].parent.mkdir()
    for path in strangers[1:]:
        path.write_text("not rsabench's")
    main(["cache", "clear", "--cache-dir", str(cache)])
    assert f"removed {len(entries)} file(s)" in capsys.readouterr().out
    assert all(p.exists() for p in strangers[1:]) and not any(p.exists() for p in entries)
    main(["cache", "info", "--cache-dir", str(tmp_path / "nowhere")])
    assert "does not exist yet" in capsys.readouterr().out


def test_the_upper_triangle_round_trips_exactly(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((9, 5)).astype(np.float32)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    from rsabench.rsa import rdm_from_unit_rows

    rdms = np.stack([rdm_from_unit_rows(z), rdm_from_unit_rows(z[::-1].copy())])
    store = FeatureCache(tmp_path)
    store.put(["a" * 64, "b" * 64], rdms, {})
    np.testing.assert_array_equal(store.get(["a" * 64, "b" * 64], 9), rdms)
    assert store.get(["a" * 64, "c" * 64], 9) is None and store.misses == 1
