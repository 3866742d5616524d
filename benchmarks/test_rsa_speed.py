"""Speed of the RSA engine against the plain scipy way, with agreement checks.

(a) correlation RDM, n=1000 images, d=4096 features: float32 Gram form vs ``pdist(metric="correlation")``.
(b) one model RDM vs 15 subject RDMs at n=92: prepared Spearman (subjects ranked once, one matrix
    product) vs a ``scipy.stats.spearmanr`` loop over the subjects.

Speed-ups are measured in the same process with interleaved best-of-N timings of both sides (so a
busy machine slows both alike) and asserted against the targets; pytest-benchmark records the tables.
Run: ``pytest benchmarks/test_rsa_speed.py`` (results in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr
from timing import best_time

from rsabench.rsa import SpearmanMetric, correlation_rdm, correlation_rdm_numpy, upper_tri

N_IMAGES, N_FEATURES = 1000, 4096
RDM_SPEEDUP_TARGET = 15.0
SPEARMAN_SPEEDUP_TARGET = 25.0
ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RSABENCH_TEST_DATA", ROOT.parent / "shared" / "data"))


def interleaved_speedup(slow: Callable[[], object], fast: Callable[[], object], rounds: int, slow_n: int, fast_n: int):
    """(best slow, best fast, ratio), alternating the two ``rounds`` times."""
    t_slow = t_fast = float("inf")
    for _ in range(rounds):
        t_slow = min(t_slow, best_time(slow, slow_n))
        t_fast = min(t_fast, best_time(fast, fast_n))
    return t_slow, t_fast, t_slow / t_fast


def machine_info() -> dict[str, object]:
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "unset"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
    }


# ------------------------------------------------------------------------------------------------
# (a) correlation RDM
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def features() -> np.ndarray:
    """ReLU-like float32 features with a shared component: distances span a wide range."""
    rng = np.random.default_rng(0)
    common = rng.standard_normal(N_FEATURES, dtype=np.float32)
    weights = rng.uniform(0.0, 2.0, size=(N_IMAGES, 1)).astype(np.float32)
    x = weights * common + rng.standard_normal((N_IMAGES, N_FEATURES), dtype=np.float32)
    return np.maximum(x, 0.0)


@pytest.fixture(scope="module")
def pdist_reference(features) -> np.ndarray:
    return pdist(features, metric="correlation")


@pytest.mark.parametrize("impl", ["numpy", "torch"])
def test_rdm_gram_float32_speedup(benchmark, impl, features, pdist_reference):
    benchmark.group = "correlation RDM n=1000 d=4096"
    if impl == "numpy":
        fast = lambda: correlation_rdm_numpy(features)  # noqa: E731
    else:
        tensor = torch.from_numpy(features)
        fast = lambda: correlation_rdm(tensor)  # noqa: E731
    out = benchmark.pedantic(fast, rounds=10, iterations=1, warmup_rounds=1)
    out = out.numpy() if isinstance(out, torch.Tensor) else out
    assert out.dtype == np.float32
    spread = pdist_reference.max() - pdist_reference.min()
    assert spread > 0.5  # a wide range of distances is checked, not ~1 everywhere
    np.testing.assert_allclose(upper_tri(out), pdist_reference, rtol=0, atol=1e-5)

    t_ref, t_fast, ratio = interleaved_speedup(
        lambda: pdist(features, metric="correlation"), fast, rounds=3, slow_n=1, fast_n=10
    )
    benchmark.extra_info.update(machine_info())
    benchmark.extra_info.update({"pdist_s": t_ref, "fast_s": t_fast, "speedup": ratio})
    print(f"\ncorrelation RDM ({impl} float32 Gram): {t_fast * 1e3:.1f} ms, pdist {t_ref * 1e3:.0f} ms: {ratio:.1f}x")
    assert ratio >= RDM_SPEEDUP_TARGET, f"{impl} Gram RDM {ratio:.1f}x faster than pdist (target {RDM_SPEEDUP_TARGET}x)"


def test_rdm_scipy_pdist(benchmark, features, pdist_reference):
    benchmark.group = "correlation RDM n=1000 d=4096"
    benchmark.extra_info.update(machine_info())
    out = benchmark.pedantic(pdist, args=(features,), kwargs={"metric": "correlation"}, rounds=3, iterations=1)
    np.testing.assert_array_equal(out, pdist_reference)


# ------------------------------------------------------------------------------------------------
# (b) one model RDM vs 15 subject RDMs, n=92
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spearman_case() -> tuple[np.ndarray, np.ndarray, str]:
    """(model vector, 15 subject vectors, source): Algonauts 92 IT fMRI + an AlexNet fc6 RDM when present."""
    fmri = SHARED / "algonauts2019" / "Training_Data" / "92_Image_Set" / "target_fmri.mat"
    model_mat = SHARED / "algonauts2019" / "model_rdms" / "92images_rdms" / "alexnet" / "pearson" / "fc6"
    model_mat = model_mat / "submit_fmri.mat"
    if fmri.is_file() and model_mat.is_file():
        import h5py
        from scipy.io import loadmat

        with h5py.File(fmri, "r") as f:
            subjects = np.asarray(f["IT_RDMs"]).T  # MATLAB v7.3: axes reversed -> (15, 92, 92)
        model = loadmat(model_mat)["IT_RDMs"]
        source = "Algonauts 2019 92-image IT fMRI (15 subjects) vs AlexNet fc6 RDM"
    else:
        rng = np.random.default_rng(1)
        base = rng.standard_normal((92, 64))
        subjects = np.stack([correlation_rdm_numpy(base + rng.standard_normal((92, 64)) * 2) for _ in range(15)])
        model = correlation_rdm_numpy(base + rng.standard_normal((92, 64)))
        source = "synthetic (reference data not found)"
    assert subjects.shape == (15, 92, 92)
    return upper_tri(np.asarray(model, dtype=np.float64)), upper_tri(subjects.astype(np.float64)), source


def spearman_loop(model: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    return np.array([spearmanr(model, s)[0] for s in subjects])


def test_spearman_scipy_loop(benchmark, spearman_case):
    model, subjects, source = spearman_case
    benchmark.group = "spearman 1 model vs 15 subjects n=92"
    benchmark.extra_info["data"] = source
    out = benchmark(spearman_loop, model, subjects)
    assert out.shape == (15,)


def test_spearman_prepared_speedup(benchmark, spearman_case):
    model, subjects, source = spearman_case
    benchmark.group = "spearman 1 model vs 15 subjects n=92"
    metric = SpearmanMetric()
    prepared = metric.prepare(subjects)  # once per dataset load, as TargetScorer does
    out = benchmark(metric.compare, model, prepared)
    reference = spearman_loop(model, subjects)
    np.testing.assert_allclose(out[0], reference, rtol=0, atol=1e-12)
    assert np.all(np.abs(reference) > 1e-3)

    t_ref, t_fast, ratio = interleaved_speedup(
        lambda: spearman_loop(model, subjects), lambda: metric.compare(model, prepared), rounds=5, slow_n=10, fast_n=50
    )
    benchmark.extra_info.update(machine_info())
    benchmark.extra_info.update({"data": source, "scipy_loop_s": t_ref, "prepared_s": t_fast, "speedup": ratio})
    print(f"\nspearman prepared: {t_fast * 1e6:.0f} us, spearmanr loop {t_ref * 1e3:.2f} ms: {ratio:.1f}x ({source})")
    assert ratio >= SPEARMAN_SPEEDUP_TARGET, (
        f"prepared Spearman only {ratio:.1f}x faster than a spearmanr loop (target {SPEARMAN_SPEEDUP_TARGET}x)"
    )
