"""Unknown dataset or objective options are a one-line usage error naming them, for every registered plugin."""

from __future__ import annotations

import pytest

from rsabench.cli import main
from rsabench.errors import UsageError
from rsabench.options import route_options
from rsabench.plugins import get_plugins
from rsabench.registry import accepted_options

PLUGINS = get_plugins()
UNKNOWN = "zz_unknown_option"
KINDS = {
    "dataset": (PLUGINS.datasets, 1, "--dataset-option"),
    "objective": (PLUGINS.objectives, 0, "--objective-option"),
}
CASES = [(kind, name) for kind, (registry, _, _) in KINDS.items() for name in registry.names()]


@pytest.mark.parametrize("kind, name", CASES)
@pytest.mark.parametrize("scoped", [False, True])
def test_routing_refuses_an_unknown_option(kind, name, scoped):
    registry, skip, option = KINDS[kind]
    accepted = {name: accepted_options(registry.get(name), skip=skip)}
    assert accepted[name] is not None, f"{kind} {name!r} takes **kwargs: it must declare its options"
    key = f"{name}.{UNKNOWN}" if scoped else UNKNOWN
    with pytest.raises(UsageError) as err:
        route_options(option, kind, [(key, "1")], accepted)
    message = str(err.value)
    assert message.startswith(f"{option} {key}: ") and repr(UNKNOWN) in message and "\n" not in message


@pytest.mark.parametrize("kind, name", CASES)
def test_the_factory_itself_never_swallows_an_unknown_option(kind, name, tmp_path):
    registry, skip, _ = KINDS[kind]
    args = (tmp_path,) if skip else ()
    with pytest.raises((TypeError, UsageError), match=UNKNOWN):
        registry.get(name)(*args, **{UNKNOWN: "1"})


@pytest.mark.parametrize("kind, name", CASES)
def test_cli_plan_exits_2_with_one_line(kind, name, tmp_path, capsys):
    _, _, option = KINDS[kind]
    runs = tmp_path / "runs"
    argv = ["plan", f"--{kind}", name, option, f"{UNKNOWN}=1", "--runs-dir", str(runs), "--data-dir", str(tmp_path)]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {option} {UNKNOWN}: ") and repr(UNKNOWN) in err
    assert not runs.exists()
