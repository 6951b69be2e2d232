"""The ``llavac`` command line: parses arguments, calls the library, prints what it returns.

Every command takes ``--config`` (a YAML file or a preset name), its flags and positionals and
``section.key=value`` overrides, in that order of precedence. The commands are one table
(``llavac.cli.table``): the parser, ``--help`` and the dispatch below are built from it, so
nothing is declared twice and ``--help`` names the config key of every flag. The library
functions take config objects and return results; printing stays here.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from llavac import __version__
from llavac.cli.options import add_config_arguments, config_from_args
from llavac.cli.table import COMMANDS, GROUPS, Command
from llavac.console import default_threads, log


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``llavac: error: ...`` and exit 2, as for bad values."""

    def error(self, message: str):
        self.exit(2, f"llavac: error: {message} (see {self.prog} --help)\n")


def _common() -> argparse.ArgumentParser:
    """Options every command takes."""
    common = Parser(add_help=False)
    group = common.add_argument_group("output and machine")
    group.add_argument("-q", "--quiet", action="store_true",
                       help="only warnings and errors (no tables)")
    group.add_argument("-v", "--verbose", action="store_true",
                       help="also the libraries' own messages")
    group.add_argument("--threads", type=int, default=None,
                       help=f"torch CPU threads [default: {default_threads()}, all cores but "
                       "one, leaving one for data loading]")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command in ``COMMANDS``."""
    parser = Parser(
        prog="llavac", description="LLaVAC: a vision-language model as a multimodal sentiment "
        "classifier (text, image and multimodal labels).")
    parser.add_argument("--version", action="version", version=f"llavac {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    groups = {}
    for command in COMMANDS:
        where = subparsers
        if " " in command.name:  # data check: a command of the group data
            group, _ = command.name.split(" ", 1)
            if group not in groups:
                groups[group] = subparsers.add_parser(group, help=GROUPS[group]).add_subparsers(
                    dest=f"{group}_command", required=True, parser_class=Parser)
            where = groups[group]
        sub = where.add_parser(command.name.split(" ")[-1], help=command.help,
                               description=command.help, parents=[_common()])
        add_config_arguments(sub, command.config, list(command.flags),
                             list(command.positionals))
        sub.set_defaults(command_row=command)
    return parser


def command_config(command: Command, args: argparse.Namespace):
    """The config ``command`` runs with: its preset (if any) beneath ``--config``, then the
    flags, positionals and overrides of ``args``."""
    config = config_from_args(command.config, args, list(command.flags),
                              list(command.positionals))
    if command.preset is not None and args.config is None:
        preset = command.preset(config)
        if preset is not None:
            args.config = preset
            config = config_from_args(command.config, args, list(command.flags),
                                      list(command.positionals))
    return config


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse fills the positionals from one run of arguments only: those after options
    # (``calibrate --data D RUN key=value``) come back here, and belong with them.
    if any(item.startswith("-") for item in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = [*args.overrides, *extra]
    command: Command = args.command_row
    try:
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads: expected a number >= 1, got {args.threads}")
        from llavac.console import configure

        configure(args.quiet, args.verbose, args.threads)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FutureWarning)
            config = command_config(command, args)
        for warning in caught:  # a deprecated key or flag: one line, not a source line
            log.warning(f"llavac: warning: {warning.message}")
        return command.run(config)
    except (FileNotFoundError, ValueError) as error:
        # Bad input is the user's to fix: one clear line, no traceback.
        print(f"llavac: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llavac: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
