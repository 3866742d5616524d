"""rsabench.matio: MATLAB v5 / v7.3 (HDF5) / .npy / .npz RDM reading, and every way it can fail."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import scipy.io
from algonauts_fixture import fmri_rdms, meg_rdms, write_mat5, write_mat73

from rsabench.errors import DataError
from rsabench.matio import BARE, array_shapes, detect_format, load_rdm_arrays


@pytest.fixture
def rdms():
    return fmri_rdms(np.random.default_rng(1), 4, 9)


def test_v73_is_transposed_back_like_the_devkit(tmp_path):
    meg = meg_rdms(np.random.default_rng(2), 3, 2, 7)  # (subjects, sessions, n, n)
    path = write_mat73(tmp_path / "m.mat", {"MEG_RDMs_early": meg})
    with h5py.File(path, "r") as f:  # what h5py sees: MATLAB's column-major order, axes reversed
        assert f["MEG_RDMs_early"].shape == (7, 7, 2, 3)
    with pytest.raises(NotImplementedError):  # the header is MATLAB's: scipy recognises a v7.3 file
        scipy.io.loadmat(path)
    assert detect_format(path) == "mat-v7.3"
    got = load_rdm_arrays(path, ["MEG_RDMs_early"], ndim=4)["MEG_RDMs_early"]
    # float64 stored and read back verbatim, transposes are copies: no arithmetic, so bit-identical (every file
    # round trip in this module)
    np.testing.assert_array_equal(got, meg)
    assert array_shapes(path) == {"MEG_RDMs_early": (3, 2, 7, 7)}


def test_v73_subject_stack_and_single_matrix(tmp_path, rdms):
    path = write_mat73(tmp_path / "t.mat", {"EVC_RDMs": rdms, "sub": rdms[0]})
    got = load_rdm_arrays(path)
    np.testing.assert_array_equal(got["EVC_RDMs"], rdms)  # a float64 round trip, no arithmetic: bit-identical
    np.testing.assert_array_equal(got["sub"], rdms[0])


def test_v73_without_userblock_is_detected_by_signature(tmp_path, rdms):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["X"] = np.transpose(rdms)
    assert detect_format(path) == "mat-v7.3"
    np.testing.assert_array_equal(load_rdm_arrays(path, ["X"])["X"], rdms)  # float64 round trip: bit-identical


def test_v5_npz_npy(tmp_path, rdms):
    v5 = write_mat5(tmp_path / "a.mat", {"IT_RDMs": rdms})
    assert detect_format(v5) == "mat-v5"
    # float64 round trips through .mat v5, .npz, .npy: no arithmetic, bit-identical
    np.testing.assert_array_equal(load_rdm_arrays(v5, ["IT_RDMs"], n=9, ndim=3)["IT_RDMs"], rdms)
    npz = tmp_path / "a.npz"
    np.savez(npz, IT_RDMs=rdms)
    np.testing.assert_array_equal(load_rdm_arrays(npz, ["IT_RDMs"])["IT_RDMs"], rdms)
    npy = tmp_path / "a.npy"
    np.save(npy, rdms[0])
    np.testing.assert_array_equal(load_rdm_arrays(npy)[BARE], rdms[0])
    np.testing.assert_array_equal(load_rdm_arrays(npy, ["hIT_RDMs"])["hIT_RDMs"], rdms[0])
    # suffix does not matter: detected from the bytes
    renamed = tmp_path / "really_npz.mat"
    renamed.write_bytes(npz.read_bytes())
    assert set(load_rdm_arrays(renamed)) == {"IT_RDMs"}


def _err(path, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_rdm_arrays(path, *args, **kwargs)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    return msg


@pytest.mark.parametrize("fmt", ["v7.3", "v5"])
def test_truncated_mat(tmp_path, rdms, fmt):
    path = (write_mat73 if fmt == "v7.3" else write_mat5)(tmp_path / "t.mat", {"EVC_RDMs": rdms})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in _err(path, ["EVC_RDMs"])


def test_v73_header_only(tmp_path, rdms):
    path = write_mat73(tmp_path / "t.mat", {"EVC_RDMs": rdms})
    path.write_bytes(path.read_bytes()[:300])  # MATLAB text header, no HDF5 superblock
    assert "v7.3" in _err(path)


def test_not_matlab(tmp_path):
    path = tmp_path / "notes.mat"
    path.write_text("these are not the RDMs you are looking for\n" * 5)
    assert "not a MATLAB file" in _err(path)
    other = tmp_path / "x.csv"
    other.write_text("1,2,3\n")
    assert "unrecognised file format" in _err(other)


def test_empty_missing_and_directory(tmp_path):
    empty = tmp_path / "e.mat"
    empty.write_bytes(b"")
    assert "empty" in _err(empty)
    assert "not found" in _err(tmp_path / "nope.mat")
    assert "not a file" in _err(tmp_path)


def test_missing_key_lists_keys_present(tmp_path, rdms):
    path = write_mat73(tmp_path / "t.mat", {"EVC_RDMs": rdms, "IT_RDMS": rdms})
    msg = _err(path, ["EVC_RDMs", "IT_RDMs"])
    assert "'IT_RDMs'" in msg and "keys present: 'EVC_RDMs', 'IT_RDMS'" in msg


def test_npy_cannot_serve_several_keys(tmp_path, rdms):
    path = tmp_path / "one.npy"
    np.save(path, rdms[0])
    assert "EVC_RDMs, IT_RDMs" in _err(path, ["EVC_RDMs", "IT_RDMs"])


def test_pickled_npy_refused(tmp_path, rdms):
    path = tmp_path / "dict.npy"
    np.save(path, {"EVC_RDMs": rdms}, allow_pickle=True)
    assert "pickled" in _err(path)
    pkl = tmp_path / "x.npz"
    pkl.write_bytes(pickle.dumps(rdms))
    assert str(pkl) in _err(pkl)


@pytest.mark.parametrize("fmt", ["v7.3", "v5", "npz"])
def test_nan_non_square_asymmetric_wrong_size(tmp_path, rdms, fmt):
    def write(name, a):
        if fmt == "npz":
            p = tmp_path / f"{name}.npz"
            np.savez(p, X=a)
            return p
        return (write_mat73 if fmt == "v7.3" else write_mat5)(tmp_path / f"{name}.mat", {"X": a})

    bad = rdms.copy()
    bad[1, 2, 3] = bad[1, 3, 2] = np.nan
    assert "NaN or inf" in _err(write("nan", bad), ["X"])
    bad = rdms.copy()
    bad[0, 0, 1] = np.inf
    assert "NaN or inf" in _err(write("inf", bad), ["X"])
    assert "square" in _err(write("rect", rdms[:, :, :8]), ["X"])
    bad = rdms.copy()
    bad[2, 1, 5] += 0.3
    assert "not symmetric" in _err(write("asym", bad), ["X"])
    assert "expected 10x10" in _err(write("size", rdms), ["X"], n=10)
    assert "expected 4 axes" in _err(write("ndim", rdms), ["X"], ndim=4)
    diag = rdms.copy()
    diag[0, 3, 3] = 0.5
    assert "diagonal" in _err(write("diag", diag), ["X"], zero_diagonal=True)
    # a NaN diagonal is allowed only when asked (decoding-accuracy RDMs), never off the diagonal
    nan_diag = rdms.copy()
    nan_diag[:, 4, 4] = np.nan
    got = load_rdm_arrays(write("nandiag", nan_diag), ["X"], check_diagonal_finite=False)["X"]
    assert np.isnan(got[:, 4, 4]).all()


def test_non_numeric_variable(tmp_path):
    path = tmp_path / "s.mat"
    scipy.io.savemat(path, {"names": np.array(["a", "b"], dtype=object)})
    assert "expected a numeric array" in _err(path, ["names"])
