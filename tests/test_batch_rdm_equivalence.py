"""Batch-RDM training (one forward per image) equals the two-branch Siamese reference (two forwards per pair).

Reference: benchmarks/siamese_reference.py, a plain per-pair implementation of Agrawal et al. 2019's loss.
Random-weight AlexNet on tiny 32 px inputs, float64, so equality can be checked to precision.F64.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from collections import OrderedDict
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from precision import F64, U32, U64, correlation_distance_tolerance
from scipy.spatial.distance import pdist, squareform

from rsabench.backbone import LayerTaps, prepare_for_taps
from rsabench.builtin.basic_objectives import Dissim
from rsabench.features import extract_rdms
from rsabench.objective import Objective
from rsabench.training import TrainSettings, epoch_batches, train

ROOT = Path(__file__).resolve().parents[1]


def _load_reference():
    name = "siamese_reference"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "siamese_reference.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


ref = _load_reference()

N_IMAGES = 10
SIZE = 32  # AlexNet's features up to features.11 (conv5 ReLU, 256x1x1) are defined at 32 px
LAYERS = ["features.1", "features.4", "features.11"]


_TRUNK: list[torch.nn.Module] = []


def alexnet(seed: int = 0) -> torch.nn.Module:
    """AlexNet's convolutional trunk (``features.0``..``features.12``, torchvision's default init) with
    random weights, float64. The classifier (58M parameters, undefined at 32 px) is left out for speed."""
    if not _TRUNK:
        _TRUNK.append(torchvision.models.alexnet(weights=None).features)
    torch.manual_seed(seed)
    trunk = copy.deepcopy(_TRUNK[0])
    for module in trunk.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.reset_parameters()
    return prepare_for_taps(torch.nn.Sequential(OrderedDict(features=trunk))).double().eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tensors are tiny: one intra-op thread is faster, and far less hurt by a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(N_IMAGES, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.fixture(scope="module")
def target() -> torch.Tensor:
    """A symmetric dissimilarity matrix with zero diagonal, values in [0.2, 1.6]."""
    g = torch.Generator().manual_seed(2)
    t = 0.2 + 1.4 * torch.rand(N_IMAGES, N_IMAGES, generator=g, dtype=torch.float64)
    t = 0.5 * (t + t.T)
    t.fill_diagonal_(0.0)
    return t


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_grads_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and a, "both losses must reach the same parameters"
    for name in a:
        scale = float(b[name].abs().max())
        assert scale > 0, f"{name}: zero gradient makes the comparison vacuous"
        # float64 forward and backward through <= 5 convs whose inner products have <= 3456 terms (conv4:
        # 384·3·3), each a relative gamma_p ≈ 5e-14 of the tensor's scale; the two paths sum the same products
        # in another order, so they differ by a few of those per layer relative to the largest entry: F64
        assert torch.allclose(a[name], b[name], rtol=0, atol=F64 * scale), (
            f"{name}: max |diff| {float((a[name] - b[name]).abs().max()):.3e} (max |grad| {scale:.3e})"
        )


@pytest.mark.parametrize(("layer", "space"), [(layer, "distance") for layer in LAYERS] + [("features.4", "fisher-z")])
def test_batch_loss_and_gradients_equal_two_branch(images, target, layer, space):
    """Same B(B-1)/2 pairs: Dissim on one forward of B images == mean of per-pair two-branch losses."""
    model = alexnet()
    pairs = ref.within_group_pairs({"g": range(N_IMAGES)})
    assert len(pairs) == N_IMAGES * (N_IMAGES - 1) // 2

    model.zero_grad(set_to_none=True)
    batch_loss = Dissim(space=space).loss(LayerTaps(model, [layer])(images)[layer], target)
    batch_loss.backward()
    batch_grads = grads(model)

    model.zero_grad(set_to_none=True)
    pair_loss = ref.two_branch_loss(model, layer, {"g": images}, {"g": target}, pairs, space=space)
    pair_loss.backward()
    pair_grads = grads(model)

    assert batch_loss.dtype == torch.float64
    # a wrong pair set (diagonal included, both triangles, sum instead of mean) moves the loss by >1e-3
    assert float(batch_loss.detach()) > 1e-3
    # float64 forwards (see assert_grads_equal) and a mean over 45 pair terms, two orders: rel F64
    assert float(batch_loss.detach()) == pytest.approx(float(pair_loss.detach()), rel=F64)
    assert_grads_equal(batch_grads, pair_grads)


def test_sub_batch_equals_two_branch_on_its_pairs(images, target):
    """A batch of a subset of images (as the trainer indexes it) uses exactly that subset's pairs."""
    model = alexnet(seed=3)
    idx = np.array([7, 2, 9, 4, 0, 5])
    layer = "features.4"
    batch_loss = Dissim().loss(LayerTaps(model, [layer])(images[idx])[layer], target[idx][:, idx])
    pairs = ref.within_group_pairs({"g": idx})
    pair_loss = ref.two_branch_loss(model, layer, {"g": images}, {"g": target}, pairs)
    assert float(batch_loss.detach()) == pytest.approx(float(pair_loss.detach()), rel=F64)  # as above


def test_train_epoch_equals_two_branch_epoch(images, target):
    """One epoch of ``train`` (one batch of the training images, SGD) == one two-branch epoch with one step
    over the same pairs, forwarded in chunks of 7 pairs with accumulated gradients: same parameters after."""
    layer = "features.7"
    train_idx = np.array([8, 1, 6, 3, 0, 9, 4, 5])  # images 2 and 7 held out: they must not contribute
    settings = TrainSettings(epochs=1, batch_size=len(train_idx), lr=0.05, optimizer="sgd", momentum=0.9)

    a = alexnet(seed=4)
    before = {n: p.detach().clone() for n, p in a.named_parameters()}
    result = train(
        a, layer, Dissim(), {"g": images}, {"g": train_idx}, {"g": target}, settings, seed=0, evaluate=lambda epoch: 0.0
    )
    assert result.epochs_run == 1

    b = alexnet(seed=4)
    pairs = ref.within_group_pairs({"g": train_idx})
    assert len(pairs) == 28
    opt = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9)
    loss = ref.two_branch_epoch(
        b,
        layer,
        {"g": images},
        {"g": target},
        pairs,
        opt,
        pairs_per_step=len(pairs),
        pairs_per_forward=7,
        generator=torch.Generator().manual_seed(0),
    )

    assert result.train_loss[0] == pytest.approx(loss, rel=F64)  # float64, two orders (see assert_grads_equal)
    moved = 0
    for name, p in b.named_parameters():
        step_a = dict(a.named_parameters())[name].detach() - before[name]
        step_b = p.detach() - before[name]
        scale = float(step_b.abs().max())
        moved += scale > 0
        # one SGD step, -lr·g (momentum buffer empty): the gradients' F64 relative to scale (assert_grads_equal),
        # plus the rounding of p - lr·g, which the subtraction p_after - p_before keeps: <= 1 ulp of |p| <= 1
        tol = F64 * scale + 2 * U64 * float(before[name].abs().max())
        assert torch.allclose(step_a, step_b, rtol=0, atol=tol), name
    assert moved >= 6  # conv1..conv3 weights and biases took a step


EXTRACT_LAYERS = ["features.4", "features.11"]


@pytest.fixture(scope="module")
def pairwise_reference(images) -> dict[str, np.ndarray]:
    """Per-pair two-branch RDMs of ``alexnet(seed=5)`` (float64), checked against scipy's pdist on
    single-image forwards; also the float64 features, from which the float32 tolerance follows."""
    model = alexnet(seed=5)
    taps = LayerTaps(model, EXTRACT_LAYERS)
    out = {}
    for layer in EXTRACT_LAYERS:
        out[layer] = ref.pairwise_rdm(model, layer, images)
        with torch.no_grad():
            single = torch.cat([taps(images[i : i + 1])[layer].reshape(1, -1) for i in range(N_IMAGES)])
        # float64 both ways, a few hundred to a few thousand terms per inner product (precision.F64)
        np.testing.assert_allclose(out[layer], squareform(pdist(single.numpy(), metric="correlation")), atol=F64)
        out[layer, "features"] = single.numpy()
    return out


@pytest.mark.parametrize("batch_size", [3, 4, 10])
def test_extract_rdms_equals_pairwise(images, pairwise_reference, batch_size):
    """``extract_rdms`` (batched Gram form, float32; batches of 3, 4, all) == per-pair two-branch distances."""
    model = alexnet(seed=5)
    layers = EXTRACT_LAYERS
    rdms = extract_rdms(model, layers, images, batch_size=batch_size)
    assert rdms.shape == (2, N_IMAGES, N_IMAGES) and rdms.dtype == np.float32
    for k, layer in enumerate(layers):
        # extract_rdms works in float32 by design: the bound of that computation on these features
        tol = correlation_distance_tolerance(pairwise_reference[layer, "features"], U32)
        assert tol < 1e-3  # still far below what a wrong formula moves (centring, pairing: >= 1e-2)
        np.testing.assert_allclose(rdms[k], pairwise_reference[layer], rtol=0, atol=tol)
        assert np.all(np.diag(rdms[k]) == 0.0) and np.array_equal(rdms[k], rdms[k].T)


class RecordingObjective(Objective):
    """Records what the trainer hands the objective; zero loss gradient, so weights never move."""

    name = "recording"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def loss(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls.append((features.detach().reshape(len(features)).numpy().copy(), target.numpy().copy()))
        return (features * 0.0).sum()


GROUP_SIZES = {"a": 9, "b": 6, "c": 1}
GROUP_ID = {"a": 1, "b": 2, "c": 3}


def pair_code(group: str, i: int, j: int) -> float:
    return GROUP_ID[group] * 10_000 + min(i, j) * 100 + max(i, j)


@pytest.mark.parametrize("batch_size", [2, 4, 32])
def test_trainer_batches_hold_only_within_group_strict_pairs(batch_size):
    """Every batch is one group's training images; its target rows/columns are those images; over an
    epoch, the strict upper triangles cover each within-group training pair exactly once when the batch
    holds the whole group, and at most once otherwise; no self-pair, no cross-group pair."""
    images = {g: torch.tensor([[GROUP_ID[g] * 100.0 + k] for k in range(n)]) for g, n in GROUP_SIZES.items()}
    targets = {}
    for g, n in GROUP_SIZES.items():
        t = torch.full((n, n), -1.0)  # -1 on the diagonal: a self-pair would show up as -1
        for i, j in combinations(range(n), 2):
            t[i, j] = t[j, i] = pair_code(g, i, j)
        targets[g] = t
    train_index = {"a": np.array([0, 2, 3, 5, 6, 8]), "b": np.arange(6), "c": np.array([0])}
    model = torch.nn.Sequential(torch.nn.Linear(1, 1, dtype=torch.float32))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.fill_(0.0)
    objective = RecordingObjective()
    settings = TrainSettings(epochs=2, batch_size=batch_size, lr=1e-3)
    train(model, "0", objective, images, train_index, targets, settings, seed=0, evaluate=lambda e: 0.0)

    expected = {pair_code(g, i, j) for g, idx in train_index.items() for i, j in combinations(idx, 2)}
    n_batches = len(objective.calls) // 2
    for epoch_calls in (objective.calls[:n_batches], objective.calls[n_batches:]):
        seen: list[float] = []
        seen_images: list[float] = []
        for feats, target in epoch_calls:
            codes = np.rint(feats).astype(int)
            groups = {c // 100 for c in codes}
            assert len(groups) == 1, f"batch mixes groups {groups}"
            g = {v: k for k, v in GROUP_ID.items()}[groups.pop()]
            idx = codes % 100
            assert set(idx) <= set(train_index[g]), "a held-out image entered a batch"
            assert 2 <= len(idx) <= batch_size
            np.testing.assert_array_equal(np.diag(target), -1.0)  # rows/cols aligned with the batch images
            iu = np.triu_indices(len(idx), k=1)
            np.testing.assert_array_equal(target[iu], [pair_code(g, idx[a], idx[b]) for a, b in zip(*iu, strict=True)])
            seen.extend(target[iu].tolist())
            seen_images.extend(codes.tolist())
        assert len(seen) == len(set(seen)), "a pair was used twice in one epoch"
        assert set(seen) <= expected
        assert sorted(seen_images) == sorted(GROUP_ID[g] * 100 + k for g in ("a", "b") for k in train_index[g])
        if batch_size >= max(len(v) for v in train_index.values()):
            assert set(seen) == expected


def test_epoch_batches_partition_each_group():
    """epoch_batches: each training image once per epoch, batches of >= 2 from a single group."""
    index = {"x": np.arange(10, 27), "y": np.array([3, 1, 4]), "z": np.array([5])}
    for batch_size in (2, 5, 17, 40):
        batches = epoch_batches(index, batch_size, torch.Generator().manual_seed(batch_size))
        for group in ("x", "y"):
            got = np.sort(np.concatenate([idx for g, idx in batches if g == group]))
            np.testing.assert_array_equal(got, np.sort(index[group]))
        assert all(g != "z" for g, _ in batches)
        assert all(2 <= len(idx) <= max(batch_size, 3) for _, idx in batches)
