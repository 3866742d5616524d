"""Reading RDM arrays from MATLAB v5 / v7.3 (HDF5) files and NumPy ``.npy`` / ``.npz`` files.

MATLAB v7.3 files are HDF5; h5py sees MATLAB's column-major arrays with their axes reversed, so every
array read that way is transposed (all axes): ``(N, N, 15)`` → ``(15, N, N)``, ``(N, N, 2, 15)`` →
``(15, 2, N, N)``, exactly as the Algonauts devkit does. The format is detected from the file's bytes,
not its suffix. Every failure is a :class:`~rsabench.errors.DataError` naming the file and what was
expected.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import DataError

BARE = ""
"""Key under which the single array of a plain ``.npy`` file is returned (when no key is asked for)."""

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
SYMMETRY_RTOL = 1e-5


def detect_format(path: str | os.PathLike) -> str:
    """``"mat-v7.3"``, ``"mat-v5"``, ``"npy"``, ``"npz"`` or ``"unknown"``, from the file's first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(128)
        if head.startswith(HDF5_SIGNATURE):
            return "mat-v7.3"
        # MATLAB v7.3 files carry a 512-byte text header (userblock) before the HDF5 superblock
        fh.seek(512)
        if fh.read(8) == HDF5_SIGNATURE:
            return "mat-v7.3"
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(ZIP_MAGICS):
        return "npz"
    if head.startswith(b"MATLAB 7.3"):
        return "mat-v7.3"  # header present, HDF5 superblock missing: reading it reports truncation
    if head.startswith(b"MATLAB"):
        return "mat-v5"
    return "unknown"


def _read_hdf5(path: Path) -> dict[str, np.ndarray | str]:
    import h5py

    out: dict[str, np.ndarray | str] = {}
    try:
        with h5py.File(path, "r") as f:
            for name, item in f.items():
                if name.startswith("#") or not isinstance(item, h5py.Dataset):
                    continue  # '#refs#', '#subsystem#', MATLAB structs (groups)
                mclass = item.attrs.get("MATLAB_class", b"")
                mclass = mclass.decode() if isinstance(mclass, bytes) else str(mclass)
                if item.dtype.kind not in "biuf" or mclass in ("cell", "char", "struct", "logical_ref"):
                    out[name] = f"a MATLAB {mclass or item.dtype}"
                    continue
                out[name] = np.transpose(item[()])
    except DataError:
        raise
    except Exception as exc:  # h5py raises OSError/KeyError/RuntimeError on damaged files
        raise DataError(
            f"{path}: cannot read as a MATLAB v7.3 (HDF5) file; truncated or corrupt? ({_short(exc)})"
        ) from None
    return out


def _read_v5(path: Path) -> dict[str, np.ndarray | str]:
    import scipy.io

    try:
        raw = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises ValueError/MatReadError/TypeError/... on damaged files
        raise DataError(f"{path}: cannot read as a MATLAB v5 file; truncated or corrupt? ({_short(exc)})") from None
    out: dict[str, np.ndarray | str] = {}
    for name, value in raw.items():
        if name.startswith("__"):
            continue
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            is_container = getattr(value, "dtype", None) is not None and value.dtype.kind in "OV"
            out[name] = f"a MATLAB {'struct/cell' if is_container else type(value).__name__}"
            continue
        out[name] = value
    return out


def _read_npz(path: Path) -> dict[str, np.ndarray | str]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(
            f"{path}: cannot read as a NumPy .npz file; truncated, corrupt or pickled? ({_short(exc)})"
        ) from None


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(
                f"{path}: holds pickled Python objects; save plain arrays (np.save of an array, or np.savez with named "
                "keys)"
            ) from None
        raise DataError(f"{path}: cannot read as a NumPy .npy file; truncated or corrupt? ({_short(exc)})") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read as a NumPy .npy file; truncated or corrupt? ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray | str]:
    """Every top-level variable of a .mat/.npz file (a ``.npy`` gives ``{BARE: array}``).

    Non-numeric variables (structs, cells, text) map to a short description string instead of an array.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file (expected a .mat, .npy or .npz file)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (expected a MATLAB .mat, .npy or .npz file)")
    fmt = detect_format(path)
    if fmt == "mat-v7.3":
        return _read_hdf5(path)
    if fmt == "mat-v5":
        return _read_v5(path)
    if fmt == "npz":
        return _read_npz(path)
    if fmt == "npy":
        return {BARE: _read_npy(path)}
    if path.suffix.lower() == ".mat":
        # MATLAB v4 files have no text header; let scipy try before giving up
        try:
            return _read_v5(path)
        except DataError:
            pass
        raise DataError(f"{path}: not a MATLAB file (expected a MATLAB v5 or v7.3 .mat file)")
    raise DataError(f"{path}: unrecognised file format (expected a MATLAB v5/v7.3 .mat, .npy or .npz file)")


def check_rdms(
    arr: np.ndarray,
    where: str,
    n: int | None = None,
    ndim: int | Sequence[int] | None = None,
    zero_diagonal: bool = False,
    check_diagonal_finite: bool = True,
) -> np.ndarray:
    """Validate a stack of RDMs ``(..., n, n)`` and return it as float64.

    Checks: numeric, expected number of axes, square, size ``n``, finite, symmetric, and (optionally)
    zero diagonal. ``where`` names the file and variable in the error message.
    """
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise DataError(
            f"{where}: expected a numeric array of RDMs, got {arr if isinstance(arr, str) else type(arr).__name__}"
        )
    ndims = (ndim,) if isinstance(ndim, int) else tuple(ndim or ())
    if ndims and arr.ndim not in ndims:
        want = " or ".join(f"{d} axes" for d in ndims)
        raise DataError(f"{where}: expected {want} (..., n, n), got shape {arr.shape}")
    if arr.ndim < 2 or arr.shape[-1] != arr.shape[-2]:
        raise DataError(f"{where}: RDMs must be square (..., n, n), got shape {arr.shape}")
    if n is not None and arr.shape[-1] != n:
        raise DataError(f"{where}: RDMs are {arr.shape[-1]}x{arr.shape[-1]}, expected {n}x{n} (one row per image)")
    if arr.shape[-1] < 3:
        raise DataError(f"{where}: RDMs need at least 3 images, got shape {arr.shape}")
    arr = np.asarray(arr, dtype=np.float64)
    off = ~np.eye(arr.shape[-1], dtype=bool)
    values = arr if check_diagonal_finite else arr[..., off]
    if not np.all(np.isfinite(values)):
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        raise DataError(f"{where}: RDMs contain {bad} NaN or inf value(s); expected finite dissimilarities")
    finite = np.where(np.isfinite(arr), arr, 0.0)
    scale = max(1.0, float(np.abs(finite).max()) if finite.size else 1.0)
    asym = float(np.abs(finite - np.swapaxes(finite, -1, -2)).max())
    if asym > SYMMETRY_RTOL * scale:
        raise DataError(f"{where}: RDMs are not symmetric (largest |d(i,j) - d(j,i)| = {asym:.3g})")
    if zero_diagonal:
        diag = np.abs(np.diagonal(finite, axis1=-2, axis2=-1)).max()
        if diag > SYMMETRY_RTOL * scale:
            raise DataError(f"{where}: RDMs have a non-zero diagonal (largest |d(i,i)| = {diag:.3g})")
    return arr


def load_rdm_arrays(
    path: str | os.PathLike,
    keys: Sequence[str] | None = None,
    *,
    n: int | None = None,
    ndim: int | Sequence[int] | None = None,
    zero_diagonal: bool = False,
    check_diagonal_finite: bool = True,
    check: bool = True,
) -> dict[str, np.ndarray]:
    """RDM arrays from a MATLAB v5 / v7.3 (HDF5) ``.mat``, ``.npy`` or ``.npz`` file, by variable name.

    ``keys``: the variables wanted (a missing one is a DataError listing those present); ``None`` reads
    every numeric variable. A plain ``.npy`` holds one array: it is returned under the single key asked
    for, or under :data:`BARE` when ``keys`` is None. With ``check`` (default) each array is validated by
    :func:`check_rdms` (square, size ``n``, ``ndim`` axes, finite, symmetric, zero diagonal if asked).
    """
    path = Path(path)
    arrays = read_arrays(path)
    if list(arrays) == [BARE]:
        if keys is not None and len(keys) > 1:
            raise DataError(
                f"{path}: a .npy file holds one array, but {', '.join(keys)} are expected; "
                "use a .mat or .npz file with those keys"
            )
        arrays = {keys[0] if keys else BARE: arrays[BARE]}
    if keys is None:
        wanted = [k for k, v in arrays.items() if isinstance(v, np.ndarray)]
        if not wanted:
            raise DataError(f"{path}: no numeric arrays found (variables: {_listing(arrays)})")
    else:
        wanted = list(keys)
        missing = [k for k in wanted if k not in arrays]
        if missing:
            raise DataError(
                f"{path}: missing key{'s' if len(missing) > 1 else ''} {', '.join(repr(k) for k in missing)} "
                f"(keys present: {_listing(arrays)})"
            )
    out: dict[str, np.ndarray] = {}
    for key in wanted:
        value = arrays[key]
        where = f"{path}: {key}" if key else str(path)
        if isinstance(value, str):
            raise DataError(f"{where}: expected a numeric array of RDMs, got {value}")
        out[key] = check_rdms(value, where, n, ndim, zero_diagonal, check_diagonal_finite) if check else value
    return out


def _listing(arrays: dict) -> str:
    return ", ".join(repr(k) for k in arrays) if arrays else "none"


def array_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Shapes of the numeric variables of a .mat/.npz/.npy file without reading their values where possible.

    MATLAB v7.3 shapes are reported transposed (as :func:`load_rdm_arrays` returns them).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    fmt = detect_format(path)
    try:
        if fmt == "mat-v7.3":
            import h5py

            with h5py.File(path, "r") as f:
                return {
                    k: tuple(reversed(v.shape))
                    for k, v in f.items()
                    if not k.startswith("#") and isinstance(v, h5py.Dataset) and v.dtype.kind in "biuf"
                }
        if fmt == "mat-v5":
            import scipy.io

            return {
                name: tuple(shape)
                for name, shape, cls in scipy.io.whosmat(path)
                if cls not in ("struct", "cell", "char")
            }
    except Exception as exc:
        raise DataError(f"{path}: cannot read as a MATLAB file; truncated or corrupt? ({_short(exc)})") from None
    return {k: v.shape for k, v in read_arrays(path).items() if isinstance(v, np.ndarray)}


# -- pickled dicts in .npy files, read without unpickling -----------------------------------------
class _Global:
    """A ``module.name`` reference in a pickle stream; never imported."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name
        self.state: object = None


class _Dtype:
    def __init__(self, code: str) -> None:
        self.code, self.order = code, "|"


_MARK = object()
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_PUSH_ARG = {
    "BININT",
    "BININT1",
    "BININT2",
    "LONG1",
    "LONG4",
    "INT",
    "LONG",
    "BINFLOAT",
    "FLOAT",
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
    "SHORT_BINBYTES",
    "BINBYTES",
    "BINBYTES8",
}
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


def _reduce(func: object, args: object) -> object:
    """What REDUCE would build, for the few numpy callables a pickled scalar-keyed dict uses; else opaque."""
    if isinstance(func, _Global) and isinstance(args, tuple):
        if (
            (func.module, func.name) == ("_codecs", "encode")
            and len(args) == 2
            and args[1] == "latin1"
            and isinstance(args[0], str)
        ):
            return args[0].encode("latin1")  # how protocol 2 spells bytes
        if (func.module, func.name) == ("numpy", "dtype") and args and isinstance(args[0], str):
            return _Dtype(args[0])
        if func.module in _NUMPY_MODULES and func.name == "scalar" and len(args) == 2 and isinstance(args[0], _Dtype):
            dtype = np.dtype(args[0].order.replace("|", "=") + args[0].code)
            if dtype.kind in "iub" and isinstance(args[1], bytes) and len(args[1]) == dtype.itemsize:
                return np.frombuffer(args[1], dtype=dtype)[0].item()
    return _Global("?", "object")


class _OpcodeReader:
    """The pickle machine's stack and memo, driven by opcodes only: every opcode it does not know is refused."""

    def __init__(self) -> None:
        self.stack: list[object] = []
        self.memo: dict[int, object] = {}
        self.dicts: list[dict] = []

    def run(self, data: bytes) -> list[dict]:
        import pickletools

        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                break
            handler = _HANDLERS.get(name)
            if handler is None:
                raise ValueError(f"unsupported pickle opcode {name}")
            handler(self, name, arg)
        return self.dicts

    def pop_mark(self) -> list[object]:
        stack = self.stack
        k = len(stack) - 1 - stack[::-1].index(_MARK)
        items = stack[k + 1 :]
        del stack[k:]
        return items

    def push_arg(self, name: str, arg: object) -> None:
        self.stack.append(arg)

    def constant(self, name: str, arg: object) -> None:
        self.stack.append(_CONSTANTS[name])

    def mark(self, name: str, arg: object) -> None:
        self.stack.append(_MARK)

    def empty_dict(self, name: str, arg: object) -> None:
        self.dicts.append({})
        self.stack.append(self.dicts[-1])

    def empty_list(self, name: str, arg: object) -> None:
        self.stack.append([])

    def empty_tuple(self, name: str, arg: object) -> None:
        self.stack.append(())

    def tuple_n(self, name: str, arg: object) -> None:
        n = int(name[-1])
        items = tuple(self.stack[-n:])
        del self.stack[-n:]
        self.stack.append(items)

    def tuple_mark(self, name: str, arg: object) -> None:
        self.stack.append(tuple(self.pop_mark()))

    def put(self, name: str, arg: object) -> None:
        self.memo[len(self.memo) if name == "MEMOIZE" else int(arg)] = self.stack[-1]

    def get(self, name: str, arg: object) -> None:
        self.stack.append(self.memo[int(arg)])

    def global_(self, name: str, arg: object) -> None:
        module, _, attr = str(arg).partition(" ")
        self.stack.append(_Global(module, attr))

    def stack_global(self, name: str, arg: object) -> None:
        attr, module = self.stack.pop(), self.stack.pop()
        self.stack.append(_Global(str(module), str(attr)))

    def reduce(self, name: str, arg: object) -> None:
        args, func = self.stack.pop(), self.stack.pop()
        self.stack.append(_reduce(func, args))

    def build(self, name: str, arg: object) -> None:
        state, obj = self.stack.pop(), self.stack[-1]
        if isinstance(obj, _Dtype) and isinstance(state, tuple) and len(state) > 1 and isinstance(state[1], str):
            obj.order = state[1]

    def setitem(self, name: str, arg: object) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        if isinstance(self.stack[-1], dict):
            self.stack[-1][key] = value

    def setitems(self, name: str, arg: object) -> None:
        items = self.pop_mark()
        if isinstance(self.stack[-1], dict):
            self.stack[-1].update(zip(items[::2], items[1::2], strict=True))

    def append(self, name: str, arg: object) -> None:
        value = self.stack.pop()
        if isinstance(self.stack[-1], list):
            self.stack[-1].append(value)

    def appends(self, name: str, arg: object) -> None:
        items = self.pop_mark()
        if isinstance(self.stack[-1], list):
            self.stack[-1].extend(items)


_HANDLERS: dict[str, Callable[[_OpcodeReader, str, object], None]] = {
    **dict.fromkeys(_PUSH_ARG, _OpcodeReader.push_arg),
    **dict.fromkeys(_CONSTANTS, _OpcodeReader.constant),
    "MARK": _OpcodeReader.mark,
    "EMPTY_DICT": _OpcodeReader.empty_dict,
    "EMPTY_LIST": _OpcodeReader.empty_list,
    "EMPTY_TUPLE": _OpcodeReader.empty_tuple,
    **dict.fromkeys(("TUPLE1", "TUPLE2", "TUPLE3"), _OpcodeReader.tuple_n),
    "TUPLE": _OpcodeReader.tuple_mark,
    **dict.fromkeys(("MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"), _OpcodeReader.put),
    **dict.fromkeys(("BINGET", "LONG_BINGET", "GET"), _OpcodeReader.get),
    "GLOBAL": _OpcodeReader.global_,
    "STACK_GLOBAL": _OpcodeReader.stack_global,
    **dict.fromkeys(("REDUCE", "NEWOBJ"), _OpcodeReader.reduce),
    "BUILD": _OpcodeReader.build,
    "SETITEM": _OpcodeReader.setitem,
    "SETITEMS": _OpcodeReader.setitems,
    "APPEND": _OpcodeReader.append,
    "APPENDS": _OpcodeReader.appends,
}
"""The opcodes read (anything else is refused); none imports, calls or builds anything but plain values."""


def _pickled_dicts(data: bytes) -> list[dict]:
    """Every dict a pickle stream builds, by reading its opcodes (``pickletools.genops``): nothing is
    imported or called, so a crafted stream can run no code. Only plain values (numbers, strings,
    numpy integer scalars) are reconstructed; anything else stays an opaque placeholder."""
    return _OpcodeReader().run(data)


def read_npy_dict(path: str | os.PathLike) -> dict:
    """The one dict pickled in a ``.npy`` file (``np.save(path, {label: name})``), read without unpickling.

    Raises DataError naming the file when it is not a .npy file holding exactly one dict of plain values.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(fh)
            payload = fh.read()
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read as a NumPy .npy file ({_short(exc)})") from None
    if dtype != np.dtype(object) or shape != ():
        raise DataError(
            f"{path}: expected a pickled dict {{label: name}} (a 0-d object array), got dtype {dtype} shape {shape}"
        )
    try:
        dicts = _pickled_dicts(payload)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a plain pickled dict ({_short(exc)})") from None
    if len(dicts) != 1:
        raise DataError(f"{path}: expected exactly one pickled dict {{label: name}}, found {len(dicts)}")
    return dicts[0]
