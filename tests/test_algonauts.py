"""Algonauts 2019 datasets, the devkit's noise ceilings, and data management (info/verify/import/fetch).

Real-data tests read ``shared_data`` (skipped when absent); everything else uses generated releases.
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from algonauts_fixture import fmri_rdms, make_release, write_images, write_mat73
from precision import F64
from scipy.spatial.distance import squareform
from scipy.stats import rankdata, spearmanr

from rsabench import datastore
from rsabench.builtin import algonauts, algonauts_data
from rsabench.builtin.algonauts_convention import DEVKIT_NOISE_CEILINGS, Algonauts2019Scorer, devkit_noise_ceiling
from rsabench.conventions import ComputedScorer
from rsabench.errors import DataError, UsageError
from rsabench.rsa import SpearmanMetric


def sq(x):
    return squareform(x, force="tovector", checks=False)


@pytest.fixture(scope="module")
def fmri(shared_data):
    return algonauts.load_fmri(shared_data)


# -- the real release ----------------------------------------------------------------------------
def test_real_fmri_layout(fmri, shared_data):
    fmri.validate()
    assert {g: s.n for g, s in fmri.groups.items()} == {"92": 92, "118": 118, "78": 78, "78-ts2": 78}
    assert fmri.train_groups == ["92"]  # the 118 images are not in the shared data
    assert fmri.test_splits == {"test": ["78"], "test2": ["78-ts2"]}
    assert fmri.named_splits["train-118"] == ["118"]
    assert any("118" in n and "images" in n for n in fmri.notes)
    assert fmri.groups["118"].load_images is None
    for t in fmri.targets:
        assert t.rdms.shape == (15, 1, fmri.groups[t.group].n, fmri.groups[t.group].n) and t.kind == "1-pearson"
    assert fmri.groups["92"].ids[:2] == ["image_01", "image_02"] and fmri.groups["92"].ids[-1] == "image_92"
    assert fmri.groups["78-ts2"].ids == fmri.groups["78"].ids
    assert fmri.citation.startswith("Cichy") and "1905.05675" in fmri.citation and "not stated" in fmri.license
    assert fmri.conventions == ("algonauts2019", "computed") and fmri.target_normalization == "none"
    manifest = algonauts_data.read_manifest()
    for rel, digest in fmri.checksums.items():
        assert manifest[rel] == digest
    # values are those of the file (v7.3 transposed back), first subject, first rows
    import h5py

    with h5py.File(shared_data / "algonauts2019/Training_Data/92_Image_Set/target_fmri.mat", "r") as f:
        raw = f["IT_RDMs"][()]  # (92, 92, 15)
    np.testing.assert_array_equal(fmri.target("IT", "92").rdms[3, 0], raw[:, :, 3].T)  # a copy of the file's doubles


def test_real_images_match_rdm_rows(fmri):
    x92 = fmri.groups["92"].load_images()
    assert x92.shape == (92, 175, 175, 3) and x92.dtype == np.uint8
    x78 = fmri.groups["78"].load_images()
    assert x78.shape == (78, 400, 400, 3)  # 17 images 399/402 px wide are resized to the common size
    assert fmri.groups["78-ts2"].load_images() is x78  # shared loader, cached


@pytest.mark.parametrize("group", ["92", "118", "78"])
@pytest.mark.parametrize("target", ["EVC", "IT"])
def test_devkit_ceiling_constants_reproduce(fmri, group, target):
    """The devkit's hard-coded NC = upper ceiling (plain subject mean, squared Spearman), to 4 decimals."""
    rdms = fmri.target(target, group).rdms
    scorer = Algonauts2019Scorer(rdms, SpearmanMetric(), noise_ceiling=None)
    # the constants are printed to 4 decimals: half a unit of the last digit, plus our float64 rounding
    assert abs(scorer.ceiling_upper - DEVKIT_NOISE_CEILINGS[("fmri", group, target)]) <= 5e-5 + F64
    # and the vectorised ceiling equals the plain loop over subjects
    subj = rdms[:, 0]
    mean = subj.mean(axis=0)
    loop = np.mean([spearmanr(sq(s), sq(mean))[0] ** 2 for s in subj])
    # float64 Spearman (ranks exact) over <= 6903 pairs, squared (|r| <= 1), mean of 15, two ways: precision.F64
    assert scorer.ceiling_upper == pytest.approx(loop, abs=F64)


def test_devkit_lower_ceiling_is_leave_one_out(fmri):
    subj = fmri.target("EVC", "92").rdms[:, 0]
    loop = np.mean([spearmanr(sq(subj[s]), sq(np.delete(subj, s, 0).mean(0)))[0] ** 2 for s in range(len(subj))])
    lower, upper = devkit_noise_ceiling(np.stack([[sq(s)] for s in subj]))
    assert lower == pytest.approx(loop, abs=F64) and lower < upper  # as above: float64 R², 4186 pairs, F64


def test_pooled_subject_rdm_scores_100_percent_computed(fmri):
    rdms = fmri.target("IT", "92").rdms
    ranks = np.stack([rankdata(sq(s[0])) for s in rdms])  # rsatoolbox pools Spearman RDMs by mean rank
    pooled = squareform(ranks.mean(axis=0))
    score = ComputedScorer(rdms, SpearmanMetric()).score(pooled)
    expected = np.mean([spearmanr(sq(pooled), sq(s[0]))[0] for s in rdms])
    # float64 Spearman, 4186 pairs, scipy vs us: precision.F64
    assert score.ceiling_upper == pytest.approx(expected, abs=F64)
    # raw and ceiling: the same quantity on the same mean ranks (sums of half-integers, exact): rel F64 of 100
    assert score.normalized == pytest.approx(100.0, rel=F64)
    assert score.convention == "computed" and score.ceiling_lower < score.ceiling_upper


def test_validation_subset_uses_data_ceiling_on_same_pairs(fmri):
    from rsabench.conventions import scorer_for

    rdms = fmri.target("IT", "92").rdms
    index = np.arange(0, 92, 2)
    s = scorer_for("algonauts2019", fmri, "IT", "92", rdms, "spearman", index)
    sub = rdms[:, 0][:, index][:, :, index]
    mean = sub.mean(axis=0)
    # float64 R² over 1035 pairs, two ways: precision.F64
    assert s.ceiling_upper == pytest.approx(np.mean([spearmanr(sq(x), sq(mean))[0] ** 2 for x in sub]), abs=F64)
    full = scorer_for("algonauts2019", fmri, "IT", "92", rdms, "spearman", None)
    assert full.ceiling_upper == 0.3075  # the devkit constant itself, copied: exact


# -- generated releases --------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["v7.3", "v5"])
def test_meg_layout_both_formats(tmp_path, fmt):
    written = make_release(tmp_path, "meg", {"92": 20, "78": 78}, fmt=fmt)
    ds = algonauts.load_meg(tmp_path)
    ds.validate()
    assert ds.name == "algonauts-meg" and ds.target_names() == ["MEG-early", "MEG-late"]
    assert ds.target_normalization == "agrawal"
    t = ds.target("MEG-late", "78")
    assert t.kind == "decoding-accuracy" and t.rdms.shape == (15, 2, 78, 78)
    np.testing.assert_array_equal(t.rdms, written["78"]["MEG_RDMs_late"])  # file round trip of doubles: exact
    assert ds.train_groups == ["92"] and ds.test_splits == {"test": ["78"], "test2": ["78-ts2"]}
    assert any("118" in n for n in ds.notes)


def test_meg_nan_diagonal_is_set_to_zero(tmp_path):
    make_release(tmp_path, "meg", {"92": 12}, ts2=False)
    path = tmp_path / "algonauts2019/Training_Data/92_Image_Set/target_meg.mat"
    arrays = {k: v.copy() for k, v in algonauts.read_target_file(path, algonauts.MODALITIES["meg"]).items()}
    data = {"MEG_RDMs_early": arrays["MEG-early"], "MEG_RDMs_late": arrays["MEG-late"]}
    i = np.arange(12)
    for a in data.values():
        a[..., i, i] = np.nan
    write_mat73(path, data)
    ds = algonauts.load_meg(tmp_path)
    assert np.all(np.diagonal(ds.target("MEG-early", "92").rdms, axis1=-2, axis2=-1) == 0)  # set, not computed
    bad = data["MEG_RDMs_late"]
    bad[0, 1, 2, 3] = bad[0, 1, 3, 2] = np.nan
    write_mat73(path, data)
    with pytest.raises(DataError, match="target_meg.mat: MEG_RDMs_late: .*NaN"):
        algonauts.load_meg(tmp_path)


def test_118_images_present_trains_on_both(tmp_path):
    make_release(tmp_path, "fmri", {"92": 12, "118": 14, "78": 10})
    ds = algonauts.load_fmri(tmp_path)
    assert ds.train_groups == ["92", "118"] and ds.groups["118"].load_images().shape[0] == 14
    assert not any("dropped" in n for n in ds.notes)


def test_ts2_images_option(tmp_path):
    make_release(tmp_path, "fmri", {"92": 12, "78": 10})
    ds = algonauts.load_fmri(tmp_path, ts2_images="none")
    assert ds.groups["78-ts2"].load_images is None and ds.groups["78-ts2"].ids[0] == "78-ts2-001"
    with pytest.raises(UsageError, match="ts2_images"):
        algonauts.load_fmri(tmp_path, ts2_images="maybe")
    from rsabench.options import route_options
    from rsabench.plugins import get_plugins
    from rsabench.registry import accepted_options

    accepted = {"algonauts-fmri": accepted_options(get_plugins().datasets.get("algonauts-fmri"), skip=1)}
    assert accepted == {"algonauts-fmri": ("ts2_images",)}
    with pytest.raises(UsageError, match="no dataset of this run takes option 'colour'"):
        route_options("--dataset-option", "dataset", [("colour", "blue")], accepted)


def test_subject_counts_differ_between_targets(tmp_path):
    make_release(tmp_path, "fmri", {"92": 12}, ts2=False)
    path = tmp_path / "algonauts2019/Training_Data/92_Image_Set/target_fmri.mat"
    rng = np.random.default_rng(0)
    write_mat73(path, {"EVC_RDMs": fmri_rdms(rng, 15, 12), "IT_RDMs": fmri_rdms(rng, 14, 12)})
    with pytest.raises(
        DataError, match=r"target_fmri.mat: subject counts differ between targets \(EVC_RDMs 15, IT_RDMs 14\)"
    ):
        algonauts.load_fmri(tmp_path)


def test_missing_extra_unreadable_images(tmp_path):
    make_release(tmp_path, "fmri", {"92": 12}, ts2=False)
    folder = tmp_path / "algonauts2019/Training_Data/92_Image_Set/92images"
    (folder / "image_05.jpg").unlink()
    with pytest.raises(
        DataError,
        match=r"92images: 11 image files but the RDMs in .*target_fmri.mat are 12x12 "
        r"\(missing .*missing number\(s\) 5\)",
    ):
        algonauts.load_fmri(tmp_path)
    write_images(folder, "image_{:02d}.jpg", 13, np.random.default_rng(0))
    with pytest.raises(DataError, match=r"92images: 13 image files .* \(extra images.*13"):
        algonauts.load_fmri(tmp_path)
    (folder / "image_13.jpg").unlink()
    (folder / "image_07.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"image_07.jpg: unreadable image"):
        algonauts.load_fmri(tmp_path)
    (folder / ".DS_Store").write_bytes(b"x")  # hidden files are not images
    (folder / "Thumbs.db").write_bytes(b"x")
    write_images(folder, "image_{:02d}.jpg", 12, np.random.default_rng(0))
    assert algonauts.load_fmri(tmp_path).groups["92"].n == 12


def test_truncated_target_file_names_it(tmp_path):
    make_release(tmp_path, "fmri", {"92": 12}, ts2=False)
    path = tmp_path / "algonauts2019/Training_Data/92_Image_Set/target_fmri.mat"
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DataError, match=r"92_Image_Set/target_fmri.mat: cannot read"):
        algonauts.load_fmri(tmp_path)


def test_absent_data(tmp_path):
    with pytest.raises(
        DataError, match=r"algonauts2019: Algonauts 2019 data not found.*rsabench data import algonauts-fmri"
    ):
        algonauts.load_fmri(tmp_path)
    make_release(tmp_path, "fmri", {"92": 12})
    with pytest.raises(DataError, match=r"no target_meg\*\.mat files found"):
        algonauts.load_meg(tmp_path)


def test_registered_and_loadable_by_name(tmp_path):
    from rsabench.plugins import get_plugins

    make_release(tmp_path, "fmri", {"92": 12, "78": 10})
    ds = get_plugins().datasets.get("algonauts-fmri")(tmp_path)
    assert ds.name == "algonauts-fmri"


# -- data management -----------------------------------------------------------------------------
def test_info(tmp_path, shared_data):
    info = datastore.info("algonauts-fmri", shared_data)
    assert info["present"] and info["looks_in"] == str(shared_data / "algonauts2019")
    assert info["groups"]["92"] == {
        "role": "training set, 92 images",
        "rdm_file": "Training_Data/92_Image_Set/target_fmri.mat",
        "rdms_present": True,
        "subjects": 15,
        "n": 92,
        "image_dir": "Training_Data/92_Image_Set/92images/",
        "images": 92,
    }
    assert info["groups"]["118"]["images"] == 0 and "1905.05675" in info["citation"] and "not stated" in info["license"]
    assert "rsabench data import" in info["how_to_get"]
    empty = datastore.info("algonauts-meg", tmp_path)
    assert not empty["present"] and all(not f["present"] for f in empty["files"])
    assert datastore.info("kriegeskorte2008")["present"]


def test_verify_real_data(shared_data):
    assert datastore.verify("algonauts-fmri", shared_data) == []
    problems = datastore.verify("algonauts-meg", shared_data)
    assert len(problems) == 1 and "no target_meg*.mat" in problems[0]
    assert datastore.verify("kriegeskorte2008") == []


def test_import_verify_and_checksum_mismatch(tmp_path, shared_data):
    data_dir = tmp_path / "data"
    result = datastore.import_release("algonauts-fmri", shared_data / "algonauts2019", data_dir)
    dest = data_dir / "algonauts2019"
    assert result["destination"] == str(dest) and "Test_Data/target_fmri_TS2.mat" in result["copied"]
    assert sorted(p.name for p in data_dir.iterdir()) == ["algonauts2019"]  # no temp dirs left
    assert datastore.verify("algonauts-fmri", data_dir) == []
    readme = dest / "Test_Data/README.txt"
    readme.write_bytes(readme.read_bytes() + b" ")
    problems = datastore.verify("algonauts-fmri", data_dir)
    assert len(problems) == 1 and "Test_Data/README.txt: sha256 mismatch" in problems[0]


def test_import_refused_leaves_nothing_changed(tmp_path):
    src, data_dir = tmp_path / "src", tmp_path / "data"
    make_release(src, "fmri", {"92": 12, "78": 10})
    datastore.import_release("algonauts-fmri", src / "algonauts2019", data_dir, checksums=False)
    before = {p.relative_to(data_dir): p.read_bytes() for p in data_dir.rglob("*") if p.is_file()}
    bad = tmp_path / "bad"
    make_release(bad, "fmri", {"92": 12, "78": 10}, seed=5)
    target = bad / "algonauts2019/Test_Data/target_fmri.mat"
    target.write_bytes(target.read_bytes()[:3000])
    with pytest.raises(DataError, match=r"import refused, nothing changed: .*Test_Data/target_fmri.mat: cannot read"):
        datastore.import_release("algonauts-fmri", bad, data_dir, checksums=False)
    after = {p.relative_to(data_dir): p.read_bytes() for p in data_dir.rglob("*") if p.is_file()}
    assert after == before and sorted(p.name for p in data_dir.iterdir()) == ["algonauts2019"]


def test_import_zip_in_parts_and_unsafe_zip(tmp_path):
    src = tmp_path / "src"
    written = make_release(src, "meg", {"92": 12, "78": 10}, fmt="v5")
    data_dir = tmp_path / "data"
    for part in ("Training_Data", "Test_Data"):  # the release shipped as two archives, with a wrapper folder
        archive = tmp_path / f"{part}.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for p in (src / "algonauts2019" / part).rglob("*"):
                zf.write(p, f"Algonauts2019_release/{p.relative_to(src / 'algonauts2019')}")
            zf.writestr("__MACOSX/._junk", b"junk")
        datastore.import_release("algonauts-meg", archive, data_dir, checksums=False)
    ds = algonauts.load_meg(data_dir)
    np.testing.assert_array_equal(ds.target("MEG-early", "78").rdms, written["78"]["MEG_RDMs_early"])  # copied doubles
    assert not (data_dir / "algonauts2019" / "__MACOSX").exists()
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("Test_Data/../../escape.txt", b"x")
    with pytest.raises(DataError, match="unsafe path"):
        datastore.import_release("algonauts-meg", evil, data_dir, checksums=False)
    assert not (tmp_path / "escape.txt").exists()


def test_import_bad_sources(tmp_path):
    with pytest.raises(DataError, match="not found"):
        datastore.import_release("algonauts-fmri", tmp_path / "nope", tmp_path / "data")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no Training_Data/ or Test_Data/"):
        datastore.import_release("algonauts-fmri", tmp_path / "empty", tmp_path / "data")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 but not really")
    with pytest.raises(DataError, match="junk.zip"):
        datastore.import_release("algonauts-fmri", junk, tmp_path / "data")
    src = tmp_path / "fmri_only"
    make_release(src, "fmri", {"92": 12})
    with pytest.raises(DataError, match="sha256 mismatch"):  # generated files are not the recorded release
        datastore.import_release("algonauts-fmri", src, tmp_path / "data")
    with pytest.raises(DataError, match="no target_meg"):
        datastore.import_release("algonauts-meg", src, tmp_path / "data", checksums=False)
    with pytest.raises(UsageError, match="embedded"):
        datastore.import_release("kriegeskorte2008", src, tmp_path / "data")
    assert not (tmp_path / "data" / "algonauts2019").exists()


def test_fetch(tmp_path, shared_data):
    with pytest.raises(
        UsageError, match=r"no stable public URL.*algonauts\.csail\.mit\.edu.*rsabench data import algonauts-meg"
    ):
        datastore.fetch("algonauts-meg", tmp_path)
    assert datastore.fetch("algonauts-fmri", shared_data) == shared_data / "algonauts2019"
    assert datastore.fetch("kriegeskorte2008").is_dir()
    with pytest.raises(UsageError, match="did you mean"):
        datastore.fetch("algonauts-fmry", tmp_path)


def test_manifest_covers_the_release(shared_data):
    manifest = algonauts_data.read_manifest()
    root = shared_data / "algonauts2019"
    files = {
        p.relative_to(root).as_posix()
        for part in ("Training_Data", "Test_Data")
        for p in (root / part).rglob("*")
        if p.is_file()
    }
    assert set(manifest) == files and len(manifest) == 178


def test_datastore_generic_path_for_other_datasets(tmp_path):
    """Datasets outside Algonauts: nsd's data source lists the files it misses; nothing is loaded."""
    from rsabench.plugins import get_plugins

    if "nsd" not in get_plugins().datasets.names():
        pytest.skip("nsd is not registered")
    info = datastore.info("nsd", tmp_path)
    assert info["present"] is False and info["looks_in"] == str(tmp_path / "nsd")
    problems = datastore.verify("nsd", tmp_path)
    assert problems and all(p.startswith(str(tmp_path / "nsd")) and p.endswith("missing") for p in problems)
    with pytest.raises(UsageError, match="no fetcher"):
        datastore.fetch("nsd", tmp_path)


def test_algonauts_scores_keep_the_signed_rho_and_their_own_ceiling_source():
    """R² per subject, but ``rho``/``rho_per_subject`` signed (an anti-correlated model keeps its sign)."""
    from importlib import resources

    with np.load(str(resources.files("rsabench.data").joinpath("kriegeskorte2008.npz"))) as npz:
        rdms = npz["rdms"].astype(np.float64)
        animate = npz["category_vectors"][:, 0]
    model = (animate[:, None] == animate[None, :]).astype(np.float64)  # 1 - animacy: anti-correlated with IT
    score = Algonauts2019Scorer(rdms, SpearmanMetric(), noise_ceiling=0.25).score(model)
    signed = np.array([np.mean([spearmanr(sq(model), sq(rdms[s, k]))[0] for k in range(2)]) for s in range(4)])
    assert np.all(signed < 0)
    # float64 Spearman over 4186 pairs (ranks exact), |r| <= 1, scipy vs us: precision.F64 (2·F64 once squared)
    np.testing.assert_allclose(score.extra["rho_per_subject"], signed, rtol=0, atol=F64)
    assert score.rho == pytest.approx(signed.mean(), abs=F64)
    np.testing.assert_allclose(score.per_subject, signed**2, rtol=0, atol=2 * F64)
    assert score.ceiling_upper == 0.25  # the constant given: exact
    assert score.extra["ceiling_source"] == "devkit constant (testSub_*.py)"
    assert "devkit" in score.extra["p_value_test"] and "R²" in score.extra["p_value_test"]
    data = Algonauts2019Scorer(rdms, SpearmanMetric()).score(model)
    assert "devkit way" in data.extra["ceiling_source"] and "rsatoolbox" not in data.extra["ceiling_source"]
    assert data.extra["ceiling_upper_from_data"] == data.ceiling_upper  # no constant: the computed one itself
