"""--weights PATH that cannot be used: one line naming the file and what was expected, no torch warnings,
never torch's advice to load with ``weights_only=False``, and nothing in the file ever unpickled."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from cli_helpers import run_cli

from rsabench.backbone import checkpoint_load_problem, load_checkpoint, load_weights_only
from rsabench.errors import UsageError

RUN = ["run", "--backbone", "alexnet", "--objective", "frozen", "--image-size", "64"]
EXPECTED = "expected a state dict of tensors saved with torch.save, or a .safetensors file"


class Payload:
    """Unpickling this runs ``touch MARKER``: a checkpoint that would execute code if rsabench unpickled it."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def refused(tmp_path: Path, capsys, weights: Path) -> str:
    """The one line ``rsabench run --weights weights`` prints; asserts exit 2, no warning, nothing written."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run_cli(capsys, [*RUN, "--weights", str(weights), "--runs-dir", str(tmp_path / "runs")])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert [str(w.message) for w in caught if "torch" in (w.filename or "")] == []
    assert f"--weights {weights}:" in err and "weights_only" not in err and "will likely succeed" not in err
    assert not (tmp_path / "runs").exists()
    return err.strip()


def test_a_raw_pickle_is_one_line_without_torch_warnings(tmp_path, capsys):
    path = tmp_path / "raw.pkl"
    path.write_bytes(pickle.dumps({"a": [1, 2, 3]}, protocol=4))  # protocol 4: torch warns about it
    err = refused(tmp_path, capsys, path)
    assert "not a tensor checkpoint (a raw pickle or another format), refused without unpickling" in err
    assert err.endswith(EXPECTED)


def test_a_malicious_checkpoint_is_refused_unexecuted_and_never_advises_weights_only_false(tmp_path, capsys):
    marker = tmp_path / "executed"
    Payload.marker = str(marker)
    path = tmp_path / "evil.pt"
    torch.save({"features.0.weight": Payload()}, path)
    err = refused(tmp_path, capsys, path)
    assert "it holds a pickled Python object (posix.system), refused without unpickling" in err, err
    assert err.endswith(EXPECTED) and not marker.exists()


def test_a_state_dict_mismatch_names_the_first_keys_and_shapes(tmp_path, capsys):
    state = torchvision.models.alexnet(weights=None).state_dict()
    for key in ("features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias"):
        del state[key]
    state["extra.w"] = torch.zeros(1)
    state["classifier.6.bias"] = torch.zeros(7)
    path = tmp_path / "mismatch.pt"
    torch.save(state, path)
    err = refused(tmp_path, capsys, path)
    assert (
        "checkpoint does not fit this backbone (AlexNet: 4 missing: features.0.weight, features.0.bias, "
        "features.3.weight, ... (4 in all); 1 unexpected: extra.w; 1 of another shape (file vs model): "
        "classifier.6.bias (7,) vs (1000,)); expected a state dict of this architecture"
    ) in err, err


@pytest.mark.parametrize(
    "content, why",
    [
        (b"", "(empty or truncated)"),
        (b"not a checkpoint at all", "(not a tensor checkpoint (a raw pickle or another format), refused"),
        ("list", "holds a list, not a state dict"),
        ("truncated", "(a damaged or truncated torch.save archive)"),
    ],
)
def test_other_unusable_files_are_one_line(tmp_path, capsys, content, why):
    path = tmp_path / "w.pt"
    if content == "list":
        torch.save([torch.zeros(2)], path)
    elif content == "truncated":
        torch.save({"a": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:-200])
    else:
        path.write_bytes(content)
    err = refused(tmp_path, capsys, path)
    assert why in err and err.endswith(EXPECTED), err


def test_a_tensor_of_the_wrong_type_is_named(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "w.pt"
    torch.save({"weight": [1.0, 2.0], "bias": torch.zeros(2)}, path)
    with pytest.raises(UsageError) as e:
        load_checkpoint(model, path)
    assert str(e.value) == (
        f"--weights {path}: checkpoint does not fit this backbone (Linear: 1 of another shape (file vs model): "
        "weight a list vs (2, 3)); expected a state dict of this architecture"
    )


def test_load_problems_for_resume_are_one_line_without_the_advice(tmp_path):
    """What training.py's resume note should say of a refused checkpoint (it can use checkpoint_load_problem)."""
    Payload.marker = str(tmp_path / "executed")
    torch.save({"x": Payload()}, tmp_path / "state.pt")
    with pytest.raises(pickle.UnpicklingError) as e:
        load_weights_only(tmp_path / "state.pt")
    assert "weights_only" in str(e.value)  # torch's own message quotes the advice: it must not be passed on
    problem = checkpoint_load_problem(e.value)
    assert problem == "it holds a pickled Python object (posix.system), refused without unpickling"
    assert checkpoint_load_problem(ValueError("another cell or format")) == "ValueError: another cell or format"
    assert not (tmp_path / "executed").exists()
