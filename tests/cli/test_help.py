"""Every CLI argument has help text, and one concept has one name across subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from prunekit.cli import build_parser


def _commands(
    parser: argparse.ArgumentParser, name: str = "prunekit"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                yield f"{name} {sub}", p
                yield from _commands(p, f"{name} {sub}")


COMMANDS = dict(_commands(build_parser()))


def _options(p: argparse.ArgumentParser) -> set[str]:
    return {o for a in p._actions for o in a.option_strings}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_argument_has_help(name: str) -> None:
    missing = [
        a.option_strings or a.dest
        for a in COMMANDS[name]._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help
    ]
    assert not missing, f"{name}: no help for {missing}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_one_name_per_concept(name: str) -> None:
    opts = _options(COMMANDS[name])
    if "--out" in opts:  # every command writing results can be told to replace them
        assert "--overwrite" in opts, name
    if "--kwargs" in opts:
        assert "--model-kwargs" in opts, name  # the canonical name; --kwargs is its alias
    if "--weight-decay" in opts or "--wd" in opts:
        assert {"--weight-decay", "--wd"} <= opts, name
    if "--latency" in opts:
        assert "--no-latency" in opts, name
    if "--data" in opts and name.split()[-1] in {"train", "finetune", "slim", "prune", "demo"}:
        assert "--limit-train" in opts, name
    assert "--epochs-override" not in opts or "--epochs" in opts, name
