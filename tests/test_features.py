"""Bounded-memory feature extraction: spilling unit rows to disk changes no RDM."""

from __future__ import annotations

import numpy as np
import torch

from rsabench.features import UnitRowStore, extract_rdms
from rsabench.rsa import rdm_from_unit_rows, unit_features


def small_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 5, 3), torch.nn.ReLU()
    ).eval()


def test_spilled_rdms_equal_in_memory_rdms_exactly():
    model, images = small_net(), torch.randn(11, 3, 12, 12)
    layers = ["1", "3"]
    in_memory = extract_rdms(model, layers, images, batch_size=4)
    spilled = extract_rdms(model, layers, images, batch_size=4, budget_bytes=0)
    # Exact: the same float32 rows, in the same order, go through the same Gram product.
    np.testing.assert_array_equal(spilled, in_memory)


def test_column_chunks_cover_the_layer_and_bound_memory(monkeypatch):
    from rsabench import features

    monkeypatch.setattr(features, "CHUNK_BYTES", 4 * 3 * 2048)  # 3 images: 2048 columns a chunk
    chunks = features.column_chunks(3, 5000)
    assert chunks == [(0, 2048), (2048, 4096), (4096, 5000)]
    model, images = small_net(), torch.randn(3, 3, 40, 40)  # conv2 output: 5 x 36 x 36 = 6480 columns
    monkeypatch.setattr(features, "CHUNK_BYTES", 4 * 3 * 1024)
    chunked = extract_rdms(model, ["3"], images, batch_size=2)
    monkeypatch.setattr(features, "CHUNK_BYTES", 1 << 30)
    whole = extract_rdms(model, ["3"], images, batch_size=2)
    # float32 chunk products summed in float64 vs one float32 product: each distance is a 6480-term dot
    # product of unit rows, and a float32 sum of n unit-bounded terms errs by at most n * eps.
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=6480 * np.finfo(np.float32).eps)


def test_rdms_equal_the_unbatched_reference():
    model, images = small_net(), torch.randn(7, 3, 12, 12)
    with torch.no_grad():
        ref = rdm_from_unit_rows(unit_features(model(images)).numpy())
    got = extract_rdms(model, ["3"], images, batch_size=3, budget_bytes=1)[0]
    # float32 throughout: features of one image may differ in their last ulps between batch sizes (another
    # conv algorithm), and a distance is 1 - a 320-term dot product (5 channels x 8 x 8) of unit rows, whose
    # rounding error is bounded by n_terms * eps for unit vectors; 320 * eps covers both.
    np.testing.assert_allclose(got, ref, rtol=0, atol=320 * np.finfo(np.float32).eps)


def test_the_store_spills_once_past_its_budget_and_cleans_up():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 5)).astype(np.float32), rng.standard_normal((4, 5)).astype(np.float32)
    with UnitRowStore(["a", "b"], n=4, budget_bytes=100) as store:
        store.add("a", a[:2])  # 40 bytes
        store.add("b", b[:2])  # 80
        assert not store.spilled
        store.add("a", a[2:])  # 120 > 100: everything moves to disk
        store.add("b", b[2:])
        assert store.spilled
        spill = store._spill.name
        # one column chunk here (5 columns): the Gram is the plain float32 product, summed into float64
        np.testing.assert_array_equal(store.gram("a"), (a @ a.T).astype(np.float64))
        np.testing.assert_array_equal(store.gram("b"), (b @ b.T).astype(np.float64))
    import os

    assert not os.path.exists(spill)
