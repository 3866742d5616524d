"""Bounded-memory extraction: all 13 ReLU layers of VGG-16's ``features`` on 500 images at 112 px.

Each measurement runs in a fresh subprocess (peak RSS = its ``ru_maxrss``): build VGG-16 (random weights,
seed 0), preprocess 500 synthetic images at 112 px, extract the 13 ReLU layers' RDMs with
``rsabench.features.extract_rdms`` and score every layer against 4 synthetic subject RDMs (Spearman, the
``computed`` convention: ceilings and bootstrap CI included). The bounded path (default budget: unit rows
beyond 1 GiB spill to disk, RDMs formed one layer at a time) is asserted under 3 GiB and its RDMs equal,
bit for bit, to those of the unbounded path (every layer's features held in memory: a budget larger than
all of them), whose peak is printed beside it for comparison.

Run: ``pytest benchmarks/test_extraction_memory.py -s`` (about 3-6 minutes on 2 CPU cores).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np

N_IMAGES, SIZE = 500, 112
RELU_LAYERS = [f"features.{i}" for i in (1, 3, 6, 8, 11, 13, 15, 18, 20, 22, 25, 27, 29)]

WORKER = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np, torch
    from rsabench.backbone import IMAGENET_MEAN, IMAGENET_STD
    from rsabench.builtin.torchvision_backbones import TorchvisionBackbone
    from rsabench.features import extract_rdms
    from rsabench.images import preprocess
    from rsabench.rsa import SpearmanMetric
    from rsabench.scoring import TargetScorer

    budget, layers, out = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[5]
    n, size = int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    x = preprocess(images, size, IMAGENET_MEAN, IMAGENET_STD)
    del images
    model = TorchvisionBackbone("vgg16").build(weights="random", seed=0).model
    t0 = time.perf_counter()
    rdms = extract_rdms(model, layers, x, batch_size=32, budget_bytes=budget)
    t_extract = time.perf_counter() - t0
    latent = rng.standard_normal((n, 8))
    base = np.sqrt(((latent[:, None] - latent[None]) ** 2).sum(-1))
    subjects = np.stack([base + rng.standard_normal((n, n)) for _ in range(4)])
    subjects = 0.5 * (subjects + subjects.transpose(0, 2, 1))
    for s in subjects:
        np.fill_diagonal(s, 0.0)
    scorer = TargetScorer(subjects[:, None], SpearmanMetric(), np.arange(n))
    scores = scorer.score_many(rdms)
    np.save(out, rdms)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak_bytes": peak, "extract_s": t_extract, "raw": [s.raw for s in scores]}))
    """
)


def _run(budget: int, out: str) -> dict:
    args = [sys.executable, "-c", WORKER, str(budget), json.dumps(RELU_LAYERS), str(N_IMAGES), str(SIZE), out]
    done = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_all_vgg16_relu_layers_stay_under_3_gib(tmp_path):
    from rsabench.features import FEATURE_BUDGET_BYTES

    bounded = _run(FEATURE_BUDGET_BYTES, str(tmp_path / "bounded.npy"))
    unbounded = _run(1 << 40, str(tmp_path / "unbounded.npy"))
    gib = 2**30
    print(
        f"\nVGG-16, 13 ReLU layers, {N_IMAGES} images at {SIZE} px: bounded peak {bounded['peak_bytes'] / gib:.2f} GiB "
        f"(extraction {bounded['extract_s']:.1f} s), unbounded peak {unbounded['peak_bytes'] / gib:.2f} GiB "
        f"(extraction {unbounded['extract_s']:.1f} s)"
    )
    # Exact: both paths compute the same float32 unit rows and the same Gram product per layer; only
    # where the rows wait (memory or a spill file) differs.
    np.testing.assert_array_equal(np.load(tmp_path / "bounded.npy"), np.load(tmp_path / "unbounded.npy"))
    assert bounded["raw"] == unbounded["raw"]
    assert bounded["peak_bytes"] < 3 * gib
