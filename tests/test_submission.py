"""Scoring submissions (``rsabench score``) under the ``algonauts2019`` and ``computed`` conventions.

Golden numbers: the official devkit's figures for its example submission, and a plain re-implementation of
the devkit formula (scipy ``spearmanr`` loop, ``ttest_1samp``) written here.
"""

from __future__ import annotations

import numpy as np
import pytest
from algonauts_fixture import correlation_rdms, make_release, write_mat5, write_mat73
from precision import F64, U64, ttest_p_tolerance
from scipy.spatial.distance import squareform
from scipy.stats import spearmanr, ttest_1samp

from rsabench.builtin import algonauts
from rsabench.errors import DataError, UsageError
from rsabench.submission import score_submission

MEG_NC_78 = {"MEG-early": 0.3562, "MEG-late": 0.4452}


def sq(x):
    return squareform(x, force="tovector", checks=False)


def devkit_meg(model: np.ndarray, meg: np.ndarray) -> tuple[float, float, float]:
    """testSub_meg.py, plainly: (R², p-value, signed mean rho) of one model RDM vs (subjects, sessions, n, n)."""
    corr = np.mean([[spearmanr(sq(rdm), sq(model))[0] for rdm in subject] for subject in meg], axis=1)
    r2 = np.square(corr)
    return float(np.mean(r2)), float(ttest_1samp(r2, 0)[1]), float(np.mean(corr))


def devkit_fmri(model: np.ndarray, fmri: np.ndarray) -> tuple[float, float, float]:
    """testSub_fmri.py, plainly: (R², p-value, signed mean rho) vs (subjects, n, n)."""
    corr = np.array([spearmanr(sq(rdm), sq(model))[0] for rdm in fmri])
    r2 = np.square(corr)
    return float(np.mean(r2)), float(ttest_1samp(r2, 0)[1]), float(np.mean(corr))


def by(rows, convention, target):
    [row] = [r for r in rows if r["convention"] == convention and r["target"] == target]
    return row


@pytest.fixture(scope="module")
def fmri(shared_data):
    return algonauts.load_fmri(shared_data)


# -- the official example submission ---------------------------------------------------------------
def test_example_submission_matches_the_devkit(fmri, shared_data):
    rows = score_submission(shared_data / "algonauts2019/Test_Data/submit_fmri.mat", fmri, "test")
    assert [(r["convention"], r["target"]) for r in rows] == [
        ("algonauts2019", "EVC"),
        ("algonauts2019", "IT"),
        ("algonauts2019", "score"),
        ("computed", "EVC"),
        ("computed", "IT"),
        ("computed", "score"),
    ]
    # the official devkit prints EVC 6.58 %, IT 8.22 %, score 7.41 % of the noise ceiling; ours lie >= 3e-5 from
    # a rounding boundary (8.224966...), far beyond their float64 error (100·F64/nc ≈ 2e-9)
    assert round(by(rows, "algonauts2019", "EVC")["normalized"], 2) == 6.58
    assert round(by(rows, "algonauts2019", "IT")["normalized"], 2) == 8.22
    assert round(by(rows, "algonauts2019", "score")["normalized"], 2) == 7.41
    import h5py

    with h5py.File(shared_data / "algonauts2019/Test_Data/submit_fmri.mat", "r") as f:
        model = {k: f[k][()].T for k in ("EVC_RDMs", "IT_RDMs")}
    for target, key, nc in (("EVC", "EVC_RDMs", 0.0640), ("IT", "IT_RDMs", 0.0647)):
        r2, p, rho = devkit_fmri(model[key], fmri.target(target, "78").rdms[:, 0])
        row = by(rows, "algonauts2019", target)
        # float64 Spearman over 3003 pairs (|r| <= 1), squared, mean of 15, scipy vs us: precision.F64; so each
        # per-subject R² is off by <= 2·F64, and the t-test p-value by ttest_p_tolerance (relative ~5e-9 here:
        # these R² are ~0.005 with a small spread)
        p_tol = ttest_p_tolerance(row["per_subject"], 2 * F64)
        assert p_tol < 1e-6 * p  # far below what a wrong test (on rho, or one-sided) moves: O(p)
        assert row["raw"] == pytest.approx(r2, abs=F64) and row["p_value"] == pytest.approx(p, abs=p_tol)
        assert row["rho"] == pytest.approx(rho, abs=F64) and row["ceiling_upper"] == nc  # the constant: exact
        # raw off by <= F64, nc exact: 100·F64/nc
        assert row["normalized"] == pytest.approx(100 * r2 / nc, abs=100 * F64 / nc)
        computed = by(rows, "computed", target)
        assert computed["raw"] == pytest.approx(rho, abs=F64) and computed["rho"] == computed["raw"]
        assert computed["ceiling_lower"] < computed["ceiling_upper"]
    score = by(rows, "algonauts2019", "score")
    # np.mean of two positive float64 numbers is (a + b) / 2: at most 2 roundings apart
    evc_it = (by(rows, "algonauts2019", "EVC")["raw"] + by(rows, "algonauts2019", "IT")["raw"]) / 2
    assert score["raw"] == pytest.approx(evc_it, rel=2 * U64)
    assert score["ceiling_upper"] == pytest.approx((0.0640 + 0.0647) / 2, rel=2 * U64) and score["p_value"] is None
    assert all(r["n_subjects"] == 15 and r["n_images"] == 78 and r["split"] == "test" for r in rows)


def test_ts2_and_training_splits(fmri, shared_data):
    path = shared_data / "algonauts2019/Test_Data/submit_fmri.mat"
    rows = score_submission(path, fmri, "test2", conventions=["algonauts2019"])
    evc = by(rows, "algonauts2019", "EVC")
    subjects = fmri.target("EVC", "78-ts2").rdms[:, 0]
    mean = subjects.mean(axis=0)
    nc = np.mean([spearmanr(sq(s), sq(mean))[0] ** 2 for s in subjects])  # no devkit constant for TS2
    # float64 R², 3003 pairs, two ways: precision.F64
    assert evc["group"] == "78-ts2" and evc["ceiling_upper"] == pytest.approx(nc, abs=F64)
    assert "computed" in evc["ceiling_source"]
    layer = shared_data / "algonauts2019/model_rdms/92images_rdms/alexnet/pearson/conv1/submit_fmri.mat"
    rows = score_submission(layer, fmri, "train-92", conventions=["algonauts2019"])
    assert by(rows, "algonauts2019", "IT")["ceiling_upper"] == 0.3075  # the devkit constant, copied: exact
    with pytest.raises(
        DataError, match=r"conv1/submit_fmri.mat: EVC_RDMs: RDM is 92x92 but group '78' .* has 78 images"
    ):
        score_submission(layer, fmri, "test")
    with pytest.raises(UsageError, match=r"unknown split 'validation'; known: train-92, train-118, test, test2"):
        score_submission(layer, fmri, "validation")
    with pytest.raises(UsageError, match="--split is required"):
        score_submission(layer, fmri, None)


def test_score_by_dataset_name(shared_data):
    rows = score_submission(
        shared_data / "algonauts2019/Test_Data/submit_fmri.mat",
        "algonauts-fmri",
        "test",
        ["algonauts2019"],
        data_dir=shared_data,
    )
    assert round(by(rows, "algonauts2019", "score")["normalized"], 2) == 7.41


# -- MEG: generated files in both MATLAB formats, against the devkit formula ----------------------
@pytest.mark.parametrize("fmt", ["v7.3", "v5"])
def test_meg_scoring_matches_devkit_formula(tmp_path, fmt):
    written = make_release(tmp_path, "meg", {"78": 78}, fmt=fmt, seed=3)
    ds = algonauts.load_meg(tmp_path)
    rng = np.random.default_rng(7)
    # one model anti-correlated with the subjects' shared structure, one unrelated
    early = 100 - written["78"]["MEG_RDMs_early"].mean(axis=(0, 1))
    late = correlation_rdms(rng.standard_normal((78, 16)))
    sub = tmp_path / "submit_meg.mat"
    (write_mat73 if fmt == "v7.3" else write_mat5)(sub, {"MEG_RDMs_early": early, "MEG_RDMs_late": late})
    rows = score_submission(sub, ds, "test")
    r2s, ncs = [], []
    for target, key, model in (("MEG-early", "MEG_RDMs_early", early), ("MEG-late", "MEG_RDMs_late", late)):
        r2, p, rho = devkit_meg(model, written["78"][key])
        row = by(rows, "algonauts2019", target)
        # as in test_example_submission_matches_the_devkit: F64 for R² and rho, ttest_p_tolerance for the p-value,
        # 100·F64/nc for the normalised value
        p_tol = ttest_p_tolerance(row["per_subject"], 2 * F64)
        assert p_tol < 1e-6 * p  # far below what a wrong test (on rho, or one-sided) moves: O(p)
        assert row["raw"] == pytest.approx(r2, abs=F64)
        assert row["p_value"] == pytest.approx(p, abs=p_tol)
        assert row["rho"] == pytest.approx(rho, abs=F64)
        assert row["normalized"] == pytest.approx(100 * r2 / MEG_NC_78[target], abs=100 * F64 / MEG_NC_78[target])
        r2s.append(r2)
        ncs.append(MEG_NC_78[target])
    assert by(rows, "algonauts2019", "MEG-early")["rho"] < -0.2  # squaring hides this; rho shows it
    track = by(rows, "algonauts2019", "score")["normalized"]
    assert track == pytest.approx(100 * np.mean(r2s) / np.mean(ncs), abs=100 * F64 / np.mean(ncs))
    # averaging sessions *before* squaring differs from averaging the squares: the test would catch it
    wrong = np.mean(np.square([[spearmanr(sq(r), sq(early))[0] for r in s] for s in written["78"]["MEG_RDMs_early"]]))
    assert abs(wrong - by(rows, "algonauts2019", "MEG-early")["raw"]) > 1e-6  # a separation: 1e6 x F64
    # computed convention: mean over subjects of the session-mean rho (float64, two ways: precision.F64)
    want = devkit_meg(late, written["78"]["MEG_RDMs_late"])[2]
    assert by(rows, "computed", "MEG-late")["raw"] == pytest.approx(want, abs=F64)


def test_meg_non_official_size_uses_ceiling_from_data(tmp_path):
    written = make_release(tmp_path, "meg", {"92": 20}, ts2=False, seed=4)
    ds = algonauts.load_meg(tmp_path)
    meg = written["92"]["MEG_RDMs_late"]
    model = correlation_rdms(np.random.default_rng(0).standard_normal((20, 5)))
    sub = tmp_path / "s.npz"
    np.savez(sub, MEG_RDMs_early=model, MEG_RDMs_late=model)
    row = by(score_submission(sub, ds, "train-92", ["algonauts2019"]), "algonauts2019", "MEG-late")
    mean = meg.mean(axis=(0, 1))  # 20 images, not the official 92: the devkit constant does not apply
    nc = np.mean(np.square([np.mean([spearmanr(sq(r), sq(mean))[0] for r in s]) for s in meg]))
    assert row["ceiling_upper"] == pytest.approx(nc, abs=F64)  # float64 R², 190 pairs, two ways: precision.F64


# -- bad submissions ---------------------------------------------------------------------------------
@pytest.fixture
def small(tmp_path):
    make_release(tmp_path, "fmri", {"92": 12, "78": 10})
    return algonauts.load_fmri(tmp_path)


def _model(n, seed=0):
    return correlation_rdms(np.random.default_rng(seed).standard_normal((n, 6)))


def test_bad_submissions_name_the_file(tmp_path, small):
    good = _model(10)
    cases = {
        "missing_key.mat": ({"EVC_RDMs": good}, r"missing key 'IT_RDMs' \(keys present: 'EVC_RDMs'\)"),
        "wrong_size.mat": (
            {"EVC_RDMs": _model(11), "IT_RDMs": _model(11)},
            r"EVC_RDMs: RDM is 11x11 but group '78' .* \(expected 10x10\)",
        ),
        "stack.mat": (
            {"EVC_RDMs": np.stack([good, good]), "IT_RDMs": good},
            r"EVC_RDMs: expected one 10x10 model RDM, got shape \(2, 10, 10\)",
        ),
    }
    asym = good.copy()
    asym[0, 1] += 0.5
    cases["asym.mat"] = ({"EVC_RDMs": good, "IT_RDMs": asym}, "IT_RDMs: RDMs are not symmetric")
    nan = good.copy()
    nan[2, 3] = nan[3, 2] = np.nan
    cases["nan.mat"] = ({"EVC_RDMs": nan, "IT_RDMs": good}, "EVC_RDMs: RDMs contain 2 NaN")
    for name, (arrays, pattern) in cases.items():
        path = write_mat73(tmp_path / name, arrays)
        with pytest.raises(DataError, match=pattern) as info:
            score_submission(path, small, "test")
        assert str(path) in str(info.value)
    npy = tmp_path / "one.npy"
    np.save(npy, good)
    with pytest.raises(
        DataError, match=r"one.npy: a .npy file holds one RDM, but algonauts-fmri needs EVC_RDMs, IT_RDMs"
    ):
        score_submission(npy, small, "test")
    trunc = write_mat73(tmp_path / "trunc.mat", {"EVC_RDMs": good, "IT_RDMs": good})
    trunc.write_bytes(trunc.read_bytes()[:1500])
    with pytest.raises(DataError, match="trunc.mat: cannot read"):
        score_submission(trunc, small, "test")


def test_diagonal_is_ignored_like_the_devkit(tmp_path, small):
    model = _model(10)
    with_diag = model + np.eye(10)
    a = score_submission(write_mat5(tmp_path / "a.mat", {"EVC_RDMs": model, "IT_RDMs": model}), small, "test")
    b = score_submission(write_mat5(tmp_path / "b.mat", {"EVC_RDMs": with_diag, "IT_RDMs": with_diag}), small, "test")
    # the diagonal is dropped before any arithmetic: the same operations on the same numbers, exact
    assert [r["raw"] for r in a] == [r["raw"] for r in b]


def test_convention_errors(tmp_path, small):
    path = write_mat5(tmp_path / "a.mat", {"EVC_RDMs": _model(10), "IT_RDMs": _model(10)})
    with pytest.raises(UsageError, match="unknown scoring convention 'algonauts'"):
        score_submission(path, small, "test", ["algonauts"])
    with pytest.raises(UsageError, match="spearman metric"):
        score_submission(path, small, "test", ["algonauts2019"], metric="pearson")
    rows = score_submission(path, small, "test", ["computed"], metric="pearson")
    assert {r["metric"] for r in rows} == {"pearson"}


# -- kriegeskorte2008 (embedded): computed convention only ----------------------------------------
def test_kriegeskorte_bare_npy_and_key(tmp_path):
    from rsabench.builtin.kriegeskorte2008 import load

    ds = load()
    hit = ds.target("hIT", "92").rdms  # (4, 2, 92, 92)
    model = _model(92, seed=2)
    npy = tmp_path / "model.npy"
    np.save(npy, model)
    rows = score_submission(npy, "kriegeskorte2008")
    assert [(r["convention"], r["target"]) for r in rows] == [("computed", "hIT"), ("computed", "score")]
    expected = np.mean([np.mean([spearmanr(sq(r), sq(model))[0] for r in s]) for s in hit])
    # float64 Spearman, 4186 pairs, two ways: precision.F64; a one-target track is that target's value: exact
    assert rows[0]["raw"] == pytest.approx(expected, abs=F64) and rows[1]["raw"] == rows[0]["raw"]
    keyed = write_mat5(tmp_path / "k.mat", {"hIT_RDMs": model})
    assert score_submission(keyed, ds, "92")[0]["raw"] == rows[0]["raw"]  # same numbers, same operations: exact
    with pytest.raises(UsageError, match="applies to the Algonauts 2019 datasets"):
        score_submission(keyed, ds, None, ["algonauts2019"])
    with pytest.raises(DataError, match="k.mat: missing key 'hIT_RDMs'"):
        score_submission(write_mat5(tmp_path / "k.mat", {"IT_RDMs": model}), ds)
