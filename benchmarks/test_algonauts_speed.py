"""Algonauts 2019 scoring: rsabench's ``algonauts2019`` convention vs the devkit's per-subject loop.

Case: 8 model layers x 2 targets (EVC, IT) x 15 subjects at n=92. Data: the Algonauts 92-image fMRI RDMs and
the 8 AlexNet layer RDMs (conv1..fc8) from ``../shared/data`` when present, else synthetic RDMs.

- devkit: ``testSub_fmri.py``'s ``evaluate`` per layer: a ``scipy.stats.spearmanr`` loop over subjects on
  ``squareform`` vectors, squared, mean, ``ttest_1samp``; %NC from the hard-coded constants.
- rsabench (warm): ``score_many`` of the 8 layers with the scorers built once per dataset load (subject RDMs
  ranked once, see ARCHITECTURE.md); it also computes bootstrap CIs and signed-rho t-tests the devkit lacks.
- rsabench (cold): building both scorers (ranking the subjects, upper and leave-one-out ceilings, bootstrap
  indices) *plus* scoring, i.e. everything from raw arrays, for reference.

Numbers must agree (R², p-value, %NC); the warm speed-up must be at least 10x (the cold one is recorded and
must stay above 3x). Interleaved best-of-N timings.
Run: ``pytest benchmarks/test_algonauts_speed.py -s`` (results in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import squareform
from scipy.stats import spearmanr, ttest_1samp
from timing import best_time

from rsabench.conventions import scorer_for
from rsabench.rsa import SpearmanMetric, correlation_rdm_numpy

SPEEDUP_TARGET = 10.0
ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RSABENCH_TEST_DATA", ROOT.parent / "shared" / "data"))
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
NC92 = {"EVC_RDMs": 0.1589, "IT_RDMs": 0.3075}


@pytest.fixture(scope="module")
def case() -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """(8 model RDMs (8, 92, 92), {EVC_RDMs, IT_RDMs: (15, 92, 92)}, source)."""
    base = SHARED / "algonauts2019"
    fmri = base / "Training_Data" / "92_Image_Set" / "target_fmri.mat"
    models = [
        base / "model_rdms" / "92images_rdms" / "alexnet" / "pearson" / layer / "submit_fmri.mat" for layer in LAYERS
    ]
    if fmri.is_file() and all(m.is_file() for m in models):
        import h5py
        from scipy.io import loadmat

        with h5py.File(fmri, "r") as f:
            targets = {k: np.transpose(f[k][()]) for k in NC92}  # as the devkit's loadmat: axes reversed
        layers = np.stack([loadmat(m)["IT_RDMs"] for m in models])
        source = "Algonauts 2019 92-image fMRI (15 subjects) vs AlexNet conv1..fc8 RDMs"
    else:
        rng = np.random.default_rng(0)
        shared = rng.standard_normal((92, 64))
        targets = {
            k: np.stack([correlation_rdm_numpy(shared + 2 * rng.standard_normal((92, 64))) for _ in range(15)]).astype(
                np.float64
            )
            for k in NC92
        }
        layers = np.stack(
            [correlation_rdm_numpy(shared + rng.standard_normal((92, 64)) * (1 + i)) for i in range(8)]
        ).astype(np.float64)
        source = "synthetic (reference data not found)"
    assert layers.shape == (8, 92, 92) and all(t.shape == (15, 92, 92) for t in targets.values())
    return layers, targets, source


def devkit(layers: np.ndarray, targets: dict[str, np.ndarray]) -> dict[tuple[int, str], tuple[float, float, float]]:
    """testSub_fmri.py's evaluate, per layer: {(layer, key): (R², p, %NC)}."""

    def sq(x):
        return squareform(x, force="tovector", checks=False)

    out = {}
    for i, model in enumerate(layers):
        model_sq = sq(model)
        for key, rdms in targets.items():
            corr = [spearmanr(sq(rdm), model_sq)[0] for rdm in rdms]
            r2 = np.square(corr)
            out[(i, key)] = (float(np.mean(r2)), float(ttest_1samp(r2, 0)[1]), 100.0 * float(np.mean(r2)) / NC92[key])
    return out


def build(targets: dict[str, np.ndarray]) -> dict[str, object]:
    metric = SpearmanMetric()
    return {
        key: scorer_for("algonauts2019", "algonauts-fmri", key.split("_")[0], "92", rdms[:, None], metric)
        for key, rdms in targets.items()
    }


def rsabench_cold(layers: np.ndarray, targets: dict[str, np.ndarray]) -> dict[str, list]:
    return {key: scorer.score_many(layers) for key, scorer in build(targets).items()}


def test_algonauts2019_scoring_speedup(case):
    layers, targets, source = case
    reference = devkit(layers, targets)
    got = rsabench_cold(layers, targets)
    for (i, key), (r2, p, pct) in reference.items():
        s = got[key][i]
        assert s.raw == pytest.approx(r2, abs=1e-12)
        assert s.extra["p_value"] == pytest.approx(p, rel=1e-9)
        assert s.normalized == pytest.approx(pct, rel=1e-12)
    assert len({round(v[0], 6) for v in reference.values()}) == 16  # 16 distinct numbers checked

    scorers = build(targets)
    t_dev = t_cold = t_warm = float("inf")
    for _ in range(3):  # interleaved: a busy machine slows all sides alike
        t_dev = min(t_dev, best_time(lambda: devkit(layers, targets), 2))
        t_cold = min(t_cold, best_time(lambda: rsabench_cold(layers, targets), 5))
        t_warm = min(t_warm, best_time(lambda: [s.score_many(layers) for s in scorers.values()], 10))
    cold, warm = t_dev / t_cold, t_dev / t_warm
    print(
        f"\nalgonauts2019 scoring, 8 layers x 2 targets x 15 subjects, n=92 ({source}); cpus={os.cpu_count()}\n"
        f"  devkit spearmanr loop: {t_dev * 1e3:.1f} ms\n"
        f"  rsabench cold (build scorers + score): {t_cold * 1e3:.1f} ms -> {cold:.1f}x\n"
        f"  rsabench warm (score_many only):       {t_warm * 1e3:.2f} ms -> {warm:.1f}x"
    )
    assert warm >= SPEEDUP_TARGET, (
        f"algonauts2019 scoring only {warm:.1f}x faster than the devkit loop (target {SPEEDUP_TARGET}x)"
    )
    assert cold >= 3.0, f"building scorers + scoring only {cold:.1f}x faster than the devkit loop"
