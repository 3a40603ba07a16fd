"""The ``cohorts`` command (also ``python -m cohorts``).

Subcommands: ``check`` and ``eval`` (a rule, and a rule over customers in a
JSON-lines file), ``demo`` (the bundled sample and the reference articles'
scenarios), ``groups``, ``report``, ``import`` and ``campaigns`` (over a
database given with ``--db``).

Exit codes: 0 success, 1 a rule or data error (the message says what and
where), 2 a usage error (bad options), 3 an unexpected internal error (run
again with ``--debug`` for the traceback), 130 interrupted.

The package's modules, imported one way (this module imports the command
modules, they import the shared ones, nothing imports this module back):

* :mod:`._common`: exit codes, :class:`CommandError`, output (JSON, tables) and
  the messages of errors;
* :mod:`._database`: the ``--db`` option and opening the database;
* one module per command family, each with ``register(subparsers)``, which adds
  its parsers and sets ``handler=function`` on them, ``function(args) -> int``
  returning the exit code: :mod:`.rules` (``check``, ``eval``), :mod:`.demo`,
  :mod:`.groups`, :mod:`.report`, :mod:`.imports` (``import``) and
  :mod:`.campaigns`.

Handlers raise :class:`CommandError` (or any :class:`cohorts.CohortsError`) for
errors users can fix; :func:`main` prints them as one message.

Example:
    >>> main(["check", 'customer.city = "Laval" and customer.vehicle_year >= 2019'])
    customer.city = "Laval" AND customer.vehicle_year >= 2019
    0
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from .._docs import page
from ..errors import CohortsError
from . import campaigns, demo, groups, imports, report, rules
from ._common import (
    EXIT_ERROR,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    Handler,
    Parser,
    describe_error,
    error_data,
    print_json,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "build_parser",
    "describe_error",
    "main",
]

_COMMANDS = (rules, demo, groups, report, imports, campaigns)
"""The command modules, in the order ``cohorts --help`` lists their commands."""

_EPILOG = """\
examples:
  cohorts check 'customer.tags contains "VIP" and customer.city = "Laval"'
  cohorts check --sql --dialect sqlite 'repair_order.closed.last_time < 730 days ago'
  cohorts eval 'customer.vehicle_year = 2019' customers.jsonl --now 2026-11-16
  cohorts eval 'claim.filed.at within last 3 months' customers.jsonl --explain c0042
  cohorts demo --dir ./demo

exit codes: 0 ok, 1 rule or data error, 2 usage error, 3 internal error
documentation (Markdown pages):
  {cli}
  {language}
"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cohorts")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The ``cohorts`` argument parser, with every command."""
    parser = Parser(
        prog="cohorts",
        description="Customer segmentation rules: check them, run them on customers, see the demo.",
        epilog=_EPILOG.format(cli=page("cli.md"), language=page("language.md")),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cohorts {_version()}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of errors (anywhere on the line)")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", parser_class=Parser)
    for module in _COMMANDS:
        module.register(commands)
    return parser


def _split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """Take ``--debug`` from anywhere before a ``--``, so every command accepts it."""
    args = list(argv)
    end = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:end]
    return [a for i, a in enumerate(args) if not (i < end and a == "--debug")], debug


def _fail(error: BaseException, args: argparse.Namespace | None, code: int) -> int:
    wants_json = bool(getattr(args, "json", False))
    if wants_json:
        print_json({"ok": False, "error": error_data(error)})
    else:
        text = getattr(args, "rule_text", None)
        node = getattr(args, "rule_node", None)
        print(f"error: {describe_error(error, text, node)}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cohorts`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    arguments, debug = _split_debug(sys.argv[1:] if argv is None else argv)
    args: argparse.Namespace | None = None
    try:
        parser = build_parser()
        args = parser.parse_args(arguments)
        handler: Handler | None = getattr(args, "handler", None)
        if handler is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return handler(args)
    except CommandError as error:
        if debug:
            traceback.print_exc()
        return _fail(error, args, error.code)
    except CohortsError as error:
        if debug:
            traceback.print_exc()
        return _fail(error, args, EXIT_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (as with `| head`): not an error of ours.
        sys.stderr.close()
        return EXIT_OK
    except Exception as error:
        if debug:
            raise
        print(
            f"error: unexpected {type(error).__name__}: {error}\n(this is a bug in cohorts; run again with --debug "
            "for the traceback and report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
