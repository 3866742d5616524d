"""NSD (Algonauts 2023 layout) loader, on a generated dataset in the real layout (tests/nsd_fixture.py).

References are computed independently: file names parsed here, whole arrays read with np.load, ROI vertices
selected through the mapping files, RDMs from scipy ``pdist(..., "correlation")``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from nsd_fixture import CLASSES, LH_ONLY_EMPTY, make_nsd_fixture
from PIL import Image
from precision import F64, U64, correlation_distance_tolerance
from scipy.spatial.distance import pdist, squareform

from rsabench import testing
from rsabench.builtin import nsd
from rsabench.errors import DataError, UsageError
from rsabench.plugins import build_plugins

ALL_ROIS = [r for rois in CLASSES.values() for r in rois]


@pytest.fixture(scope="module")
def three(tmp_path_factory) -> tuple[Path, object]:
    """Three subjects, 12 images each: 6 seen by all, 2 more by subj01 and subj02 only."""
    data_dir = tmp_path_factory.mktemp("nsd3")
    return data_dir, make_nsd_fixture(data_dir, subjects=3, images_per_subject=12, shared=6, partial=2)


@pytest.fixture
def small(tmp_path) -> tuple[Path, object]:
    """A fresh two-subject dataset that a test may damage."""
    return tmp_path, make_nsd_fixture(tmp_path, subjects=2, images_per_subject=8, shared=5)


def _rows_from_names(root: Path, subj: str) -> dict[int, int]:
    """NSD id -> 0-based fMRI row, parsed from the image file names."""
    out = {}
    for p in (root / subj / "training_split" / "training_images").iterdir():
        left, right = p.stem.split("_")  # train-0003, nsd-01234
        out[int(right.split("-")[1])] = int(left.split("-")[1]) - 1
    return out


def _roi_vertices(root: Path, subj: str, hemi: str, roi: str) -> np.ndarray:
    cls = next(c for c, rois in CLASSES.items() if roi in rois)
    mapping = np.load(root / subj / "roi_masks" / f"mapping_{cls}.npy", allow_pickle=True).item()
    label = {name: lab for lab, name in mapping.items()}[roi]
    return np.load(root / subj / "roi_masks" / f"{hemi}.{cls}_challenge_space.npy") == label


def reference_rdm(root: Path, subj: str, roi: str, nsd_ids: list[int]) -> np.ndarray:
    """scipy pdist correlation over the ROI's lh then rh vertices, rows of the given NSD ids."""
    rows = [_rows_from_names(root, subj)[i] for i in nsd_ids]
    parts = []
    for hemi in ("lh", "rh"):
        fmri = np.load(root / subj / "training_split" / "training_fmri" / f"{hemi}_training_fmri.npy")
        mask = np.zeros(fmri.shape[1], dtype=bool)
        for part in roi.split("+"):
            mask |= _roi_vertices(root, subj, hemi, part)
        parts.append(fmri[rows][:, mask].astype(np.float64))
    x = np.concatenate(parts, axis=1)
    # the loader and pdist both work in float64 on these (exactly converted float32) values: two evaluations,
    # each within correlation_distance_tolerance of the exact RDM, are covered by precision.F64
    assert 2 * correlation_distance_tolerance(x, U64) < F64
    return squareform(pdist(x, "correlation"))


def test_shared_subset_is_matched_by_nsd_id(three):
    data_dir, fx = three
    ds = nsd.load(data_dir)
    assert list(ds.groups) == ["shared"]
    assert ds.groups["shared"].ids == [f"nsd-{i:05d}" for i in sorted(fx.shared_ids)]
    # the 2 ids seen by subj01 and subj02 only are excluded
    assert len(set(fx.nsd_ids["subj01"]) & set(fx.nsd_ids["subj02"])) == 8
    assert [t.name for t in ds.targets] == ALL_ROIS
    assert all(t.group == "shared" and t.rdms.shape == (3, 1, 6, 6) for t in ds.targets)
    ds.validate()
    assert ds.train_groups == ["shared"] and ds.test_splits == {}


def test_rdms_equal_scipy_pdist_of_lh_and_rh_roi_vertices(three):
    data_dir, fx = three
    ds = nsd.load(data_dir)
    ids = sorted(fx.shared_ids)
    for t in ds.targets:
        for s, subj in enumerate(fx.subjects):
            np.testing.assert_allclose(t.rdms[s, 0], reference_rdm(fx.root, subj, t.name, ids), rtol=0, atol=F64)
    # planted structure: ROIs differ; one hemisphere alone would give another RDM (separations: 1e9 x F64)
    ffa = ds.target("FFA-1", "shared").rdms[0, 0]
    assert not np.allclose(ffa, ds.target("PPA", "shared").rdms[0, 0], atol=1e-3)
    rows = [_rows_from_names(fx.root, "subj01")[i] for i in ids]
    lh = np.load(fx.root / "subj01/training_split/training_fmri/lh_training_fmri.npy")
    lh_only = squareform(pdist(lh[rows][:, _roi_vertices(fx.root, "subj01", "lh", "FFA-1")], "correlation"))
    assert not np.allclose(ffa, lh_only, atol=1e-3)


def test_roi_present_in_one_hemisphere_only(three):
    data_dir, fx = three
    assert not _roi_vertices(fx.root, "subj01", "lh", LH_ONLY_EMPTY).any()
    t = nsd.load(data_dir, rois=LH_ONLY_EMPTY).targets[0]
    rh = reference_rdm(fx.root, "subj01", LH_ONLY_EMPTY, sorted(fx.shared_ids))
    np.testing.assert_allclose(t.rdms[0, 0], rh, rtol=0, atol=F64)  # float64 two ways (see reference_rdm)


def test_max_images_keeps_first_by_nsd_id_and_string_options(three):
    data_dir, fx = three
    full = nsd.load(data_dir, rois="FFA-1")
    ds = nsd.load(data_dir, max_images="4", rois="FFA-1", subjects="1,subj02,3")
    assert ds.groups["shared"].ids == [f"nsd-{i:05d}" for i in sorted(fx.shared_ids)[:4]]
    # float64 Gram products of 4 vs 6 images, maybe blocked differently: precision.F64
    np.testing.assert_allclose(ds.targets[0].rdms, full.targets[0].rdms[..., :4, :4], rtol=0, atol=F64)


def test_subset_of_subjects_widens_the_shared_set(three):
    data_dir, fx = three
    ds = nsd.load(data_dir, subjects="1,2", rois="OPA")
    ids = sorted(set(fx.nsd_ids["subj01"]) & set(fx.nsd_ids["subj02"]))
    assert len(ids) == 8 and ds.groups["shared"].ids == [f"nsd-{i:05d}" for i in ids]
    np.testing.assert_allclose(ds.targets[0].rdms[1, 0], reference_rdm(fx.root, "subj02", "OPA", ids), rtol=0, atol=F64)


def test_per_subject_mode(three):
    data_dir, fx = three
    ds = nsd.load(data_dir, images="per-subject", rois="floc-places,V1v+V1d", max_images=10)
    assert list(ds.groups) == fx.subjects == ds.train_groups
    names = ["OPA", "PPA", "RSC", "V1v+V1d"]
    assert [(t.name, t.group) for t in ds.targets] == [(n, s) for s in fx.subjects for n in names]
    for subj in fx.subjects:
        ids = sorted(fx.nsd_ids[subj])[:10]
        assert ds.groups[subj].ids == [f"nsd-{i:05d}" for i in ids]
        for name in names:
            rdms = ds.target(name, subj).rdms
            assert rdms.shape == (1, 1, 10, 10)
            np.testing.assert_allclose(rdms[0, 0], reference_rdm(fx.root, subj, name, ids), rtol=0, atol=F64)
    ds.validate()


def test_images_load_lazily_in_rdm_order(three):
    data_dir, fx = three
    ds = nsd.load(data_dir, rois="EBA")
    imgs = ds.groups["shared"].load_images()
    assert imgs.dtype == np.uint8 and imgs.shape == (6, 32, 32, 3)
    rows = _rows_from_names(fx.root, "subj01")
    for k, nsd_id in enumerate(sorted(fx.shared_ids)):
        path = fx.root / "subj01/training_split/training_images" / f"train-{rows[nsd_id] + 1:04d}_nsd-{nsd_id:05d}.png"
        np.testing.assert_array_equal(imgs[k], np.asarray(Image.open(path).convert("RGB")))


def test_images_of_different_sizes_raise(small):
    data_dir, fx = small
    ds = nsd.load(data_dir, rois="EBA")
    victim = sorted((fx.root / "subj01/training_split/training_images").glob(f"*_nsd-{max(fx.shared_ids):05d}.png"))[0]
    Image.fromarray(np.zeros((20, 32, 3), np.uint8)).save(victim)
    with pytest.raises(DataError, match=f"{victim.name}.*same size"):
        ds.groups["shared"].load_images()


def test_registered_and_loadable_through_the_registry(small):
    data_dir, _ = small
    factory = build_plugins().datasets.get("nsd")
    ds = factory(data_dir, rois="PPA")
    assert ds.name == "nsd" and [t.name for t in ds.targets] == ["PPA"]


def test_plugin_contract_on_the_fixture(small):
    data_dir, _ = small
    testing.check_dataset(nsd.load, data_dir)
    testing.check_dataset(lambda d: nsd.load(d, images="per-subject"), data_dir)


def test_describe_and_missing_files(small):
    data_dir, fx = small
    info = nsd.describe()
    assert "Allen" in info["citation"] and "Gifford" in info["citation"]
    assert "NSD Terms and Conditions" in info["license"]
    paths = [f["path"] for f in info["required_files"]]
    assert "subjXX/roi_masks/lh.floc-faces_challenge_space.npy" in paths
    assert "subjXX/roi_masks/mapping_streams.npy" in paths
    assert nsd.missing_files(data_dir) == []
    (fx.root / "subj02/roi_masks/mapping_streams.npy").unlink()
    assert nsd.missing_files(data_dir) == ["subj02/roi_masks/mapping_streams.npy"]


def test_missing_fmri_file_names_it(small):
    data_dir, fx = small
    path = fx.root / "subj02/training_split/training_fmri/rh_training_fmri.npy"
    path.unlink()
    with pytest.raises(DataError, match=r"missing file .*subj02/training_split/training_fmri/rh_training_fmri\.npy"):
        nsd.load(data_dir)


def test_mask_fmri_vertex_count_mismatch(small):
    data_dir, fx = small
    mask = fx.root / "subj01/roi_masks/lh.floc-faces_challenge_space.npy"
    np.save(mask, np.load(mask)[:-3])
    n = fx.vertices["subj01"][0]
    with pytest.raises(DataError, match=rf"lh\.floc-faces_challenge_space\.npy has {n - 3} vertices .* has {n}"):
        nsd.load(data_dir, rois="FFA-1")
    nsd.load(data_dir, rois="PPA")  # other classes are unaffected


def test_fmri_rows_must_match_images(small):
    data_dir, fx = small
    path = fx.root / "subj01/training_split/training_fmri/lh_training_fmri.npy"
    np.save(path, np.load(path)[:-1])
    with pytest.raises(DataError, match="has 7 rows but .* has 8 images"):
        nsd.load(data_dir)


def test_nan_in_selected_vertices(small):
    data_dir, fx = small
    path = fx.root / "subj01/training_split/training_fmri/rh_training_fmri.npy"
    arr = np.load(path)
    row = _rows_from_names(fx.root, "subj01")[fx.shared_ids[0]]
    arr[row, _roi_vertices(fx.root, "subj01", "rh", "PPA")] = np.nan
    np.save(path, arr)
    nsd.load(data_dir, rois="OPA")  # only the ROI's vertices are read
    with pytest.raises(DataError, match="rh_training_fmri.npy has .* NaN"):
        nsd.load(data_dir, rois="PPA")


def test_data_dir_without_nsd(tmp_path):
    message = r"no NSD data under .*nsd: expected subjXX/training_split.*rsabench data info nsd"
    with pytest.raises(DataError, match=message):
        nsd.load(tmp_path)
    (tmp_path / "nsd").mkdir()
    with pytest.raises(DataError, match="no NSD subject folders"):
        nsd.load(tmp_path)


def test_empty_roi_skipped_by_default_error_when_named(tmp_path):
    fx = make_nsd_fixture(tmp_path, subjects=2, images_per_subject=6, shared=4, empty_rois={"subj02": ["RSC"]})
    ds = nsd.load(tmp_path)
    assert "RSC" not in ds.target_names() and "PPA" in ds.target_names()
    assert ds.notes == ["ROI 'RSC' skipped in group 'shared': fewer than 2 vertices (lh+rh) in subj02"]
    per = nsd.load(tmp_path, images="per-subject")
    assert per.target("RSC", "subj01") is not None and per.target("RSC", "subj02") is None
    with pytest.raises(DataError, match=r"ROI 'RSC' has 0 vertices .*subj02"):
        nsd.load(tmp_path, rois="RSC")
    assert fx.subjects == ["subj01", "subj02"]


@pytest.mark.parametrize(
    "options, match",
    [
        ({"images": "all"}, "images must be 'shared' or 'per-subject'"),
        ({"max_images": "ten"}, "max_images must be a non-negative integer"),
        ({"max_images": "-1"}, "max_images must be a non-negative integer"),
        ({"rois": "FFA1"}, "unknown ROI 'FFA1'.*did you mean 'FFA-1'"),
        ({"subjects": "7"}, "subject subj07 not found .*found: subj01, subj02"),
        ({"subjects": "s1"}, "bad subject 's1'"),
        ({"max_images": "2"}, "group 'shared' has 2 images"),
        ({"max_rdm_gb": "1e-9"}, "RDMs need .* GB"),
    ],
)
def test_bad_options(small, options, match):
    data_dir, _ = small
    with pytest.raises(UsageError, match=match):
        nsd.load(data_dir, **options)


def test_unknown_option_is_a_usage_error():
    from rsabench.options import route_options
    from rsabench.registry import accepted_options

    accepted = {"nsd": accepted_options(build_plugins().datasets.get("nsd"), skip=1)}
    assert accepted["nsd"] == ("subjects", "images", "max_images", "rois", "max_rdm_gb")
    with pytest.raises(UsageError, match="no dataset of this run takes option 'max_image'; did you mean 'max_images'"):
        route_options("--dataset-option", "dataset", [("rois", "OPA"), ("max_image", "3")], accepted)


def test_checksums_follow_the_selected_data(small):
    data_dir, fx = small
    a = nsd.load(data_dir, rois="OPA").checksums
    key = "subj01/training_split/training_fmri/lh_training_fmri.npy[selected]"
    assert key in a and "subj01/roi_masks/lh.floc-places_challenge_space.npy" in a
    path = fx.root / "subj01/training_split/training_fmri/lh_training_fmri.npy"
    arr = np.load(path)
    arr[:, _roi_vertices(fx.root, "subj01", "lh", "OPA")] += 1.0
    np.save(path, arr)
    b = nsd.load(data_dir, rois="OPA").checksums
    assert a[key] != b[key]
    assert (
        a["subj02/training_split/training_fmri/lh_training_fmri.npy[selected]"]
        == b["subj02/training_split/training_fmri/lh_training_fmri.npy[selected]"]
    )
    shutil.rmtree(fx.root / "subj02")
    assert not any(k.startswith("subj02") for k in nsd.load(data_dir, rois="OPA").checksums)
