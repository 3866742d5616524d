"""One source for every option: the Click options, RunOptions and TrainSettings all come from
``rsabench.settings.SETTINGS``, and every option of every command says what it does."""

from __future__ import annotations

import dataclasses

import click
from click.testing import CliRunner

from rsabench import settings
from rsabench.cli import cli, run_options
from rsabench.runner import RunOptions
from rsabench.training import AMP_MODES, LR_SCHEDULES, OPTIMIZERS, TrainSettings


def test_run_options_are_the_settings_with_their_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(RunOptions)}
    assert set(fields) == set(settings.OPTION_FIELDS)
    for name, default in fields.items():
        assert default == settings.DEFAULTS[name], name


def test_train_settings_take_the_same_defaults_and_choices():
    fields = {f.name: f.default for f in dataclasses.fields(TrainSettings)}
    assert set(settings.TRAIN_FIELDS) <= set(fields)
    for name in settings.TRAIN_FIELDS:
        assert fields[name] == settings.DEFAULTS[name], name
    assert (OPTIMIZERS, LR_SCHEDULES, AMP_MODES) == (settings.OPTIMIZERS, settings.LR_SCHEDULES, settings.AMP_MODES)
    assert RunOptions().train_settings() == TrainSettings()


def _commands(group: click.Group, prefix: str = ""):
    for name, command in group.commands.items():
        yield f"{prefix}{name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")


def test_every_option_of_every_command_has_help():
    missing = [
        f"{name} {param.opts[0]}"
        for name, command in _commands(cli)
        for param in command.params
        if isinstance(param, click.Option) and not (param.help or "").strip()
    ]
    assert not missing


def test_run_help_lists_options_by_group_in_order():
    out = CliRunner().invoke(cli, ["run", "--help"], env={"COLUMNS": "200"}).output
    heads = [f"{g.capitalize()} options:" for g in settings.GROUPS]
    positions = [out.index(h) for h in heads]
    assert positions == sorted(positions)
    for s in settings.SETTINGS:  # each option sits in its own group's section: the last heading above it
        at = out.index(f"  {s.option} ")
        _, section = max((out.index(h), h) for h in heads if out.index(h) < at)
        assert section == f"{s.group.capitalize()} options:", s.option


def test_the_command_line_defaults_reach_run_options_unchanged():
    seen = {}

    @click.command()
    @run_options
    def probe(**kw):
        seen.update(kw)

    assert CliRunner().invoke(probe, []).exit_code == 0
    assert RunOptions.from_values(seen) == RunOptions()


def test_plan_offers_every_run_option_but_those_that_only_change_execution():
    plan_help = CliRunner().invoke(cli, ["plan", "--help"], env={"COLUMNS": "200"}).output
    run_only = {s.option for s in settings.SETTINGS if s.run_only}
    assert run_only == {"--keep-checkpoints", "--channels-last", "--jobs", "--fail-fast", "--detach"}
    for s in settings.SETTINGS:
        assert (f"  {s.option} " in plan_help) != s.run_only, s.option
