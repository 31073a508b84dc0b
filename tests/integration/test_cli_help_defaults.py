"""Every option of every ``sagellm`` subcommand has help text that states its default."""

import argparse

import pytest

from sagellm.cli import build_parser


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


SUBCOMMANDS = _subparsers()


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_option_has_help_with_its_default(name):
    parser = SUBCOMMANDS[name]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        label = "/".join(action.option_strings) or action.dest
        assert action.help, f"sagellm {name} {label}: no help"
        if not action.option_strings or action.required:
            continue  # positionals and required options have no default
        text = formatter._get_help_string(action) % {"default": action.default}
        assert "default" in text.lower(), f"sagellm {name} {label}: help does not say its default"
        assert "(default: None)" not in text, f"sagellm {name} {label}: say what None means"


def test_help_output_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--backend {local,ray}" in out and "(default: local)" in out
    assert "(default: 10.0)" in out  # --connect-timeout-s
    assert {"bench", "demo", "gate", "generate", "report", "serve", "sweep"} <= set(SUBCOMMANDS)
