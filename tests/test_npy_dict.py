"""read_npy_dict: a pickled dict of plain values read from its opcodes; every other stream is refused by name."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from rsabench.errors import DataError
from rsabench.matio import _pickled_dicts, read_npy_dict


def _npy(tmp_path, payload: bytes, name: str = "m.npy"):
    """A .npy file holding a 0-d object array whose pickle is ``payload`` (written by hand, never unpickled)."""
    path = tmp_path / name
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": ()})
        fh.write(payload)
    return path


@pytest.mark.parametrize("protocol", range(1, 6))
def test_plain_dicts_in_every_protocol(protocol):
    value = {0: "Unknown", np.int64(1): "OFA", 2: [1, (2, 3)], "k": {"n": None, "t": True}, 3: 1.5, 4: b"x"}
    (got,) = [d for d in _pickled_dicts(pickle.dumps(value, protocol=protocol)) if 0 in d]
    assert got == {0: "Unknown", 1: "OFA", 2: [1, (2, 3)], "k": {"n": None, "t": True}, 3: 1.5, 4: b"x"}
    assert type(next(k for k in got if k == 1)) is int  # numpy scalars come back as plain ints


def test_globals_are_opaque_placeholders_never_imported():
    dicts = _pickled_dicts(pickle.dumps({1: np.arange(2), 2: ValueError}, protocol=4))
    assert len(dicts) == 1 and all(type(v).__name__ == "_Global" for v in dicts[0].values())


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (pickle.dumps({1, 2}, protocol=4), "unsupported pickle opcode EMPTY_SET"),
        (pickle.dumps({1: "a"}, protocol=0), "unsupported pickle opcode DICT"),  # np.save never writes protocol 0
        (b"(i__main__\nX\n}b.", "unsupported pickle opcode INST"),
        (b"\x80\x02}(K\x01u.", "not a plain pickled dict"),  # SETITEMS with a key and no value
        (b"\x80\x02}h\x07.", "not a plain pickled dict"),  # BINGET of a memo slot never written
        (b"\x80\x02K\x01K\x02s.", "not a plain pickled dict"),  # SETITEM with nothing below the pair
        (b"\x80\x02]K\x01K\x02\x86}\x94(h\x00K\x01u.", "not a plain pickled dict"),  # unhashable (list) key
        (pickle.dumps([1, 2], protocol=2), "expected exactly one pickled dict {label: name}, found 0"),
        (pickle.dumps([{1: "a"}, {2: "b"}], protocol=2), "expected exactly one pickled dict {label: name}, found 2"),
    ],
)
def test_refusals_name_the_file(tmp_path, payload, fragment):
    path = _npy(tmp_path, payload)
    with pytest.raises(DataError, match="m.npy: ") as err:
        read_npy_dict(path)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_not_a_0d_object_array_or_not_npy(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(DataError, match=r"a\.npy: expected a pickled dict .* got dtype float64 shape \(3,\)"):
        read_npy_dict(tmp_path / "a.npy")
    (tmp_path / "b.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match=r"b\.npy: cannot read as a NumPy \.npy file"):
        read_npy_dict(tmp_path / "b.npy")
