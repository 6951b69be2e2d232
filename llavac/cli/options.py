"""A command's options: ``--config``, flags and positionals that each set one config key, and
``key=value`` overrides of any key, turned into one config object.

Precedence, lowest first: the config class's defaults, the ``--config`` YAML (a file or a
preset name), then the flags, positionals and overrides together (an override wins over a
flag for the same key).
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass
from typing import TypeVar

from llavac.config import (
    apply_overrides,
    config_keys,
    current_key,
    key_type_and_default,
    load_config,
)

C = TypeVar("C")


@dataclass(frozen=True)
class Flag:
    """A command-line flag that sets one config key (``--model`` -> ``model.name``).

    A positional (``RUN``, ``PATH``) is a Flag too: the words of a command line without ``=``
    set the command's positionals in order. ``required``: an error naming the flag when
    neither it nor the config sets the key. ``old``: a former name that still reads, with a
    warning saying this one.
    """

    option: str
    key: str
    help: str = ""
    required: bool = False
    old: str | None = None

    @property
    def dest(self) -> str:
        return self.option.lstrip("-").replace("-", "_")

    @property
    def positional(self) -> bool:
        return not self.option.startswith("-")


def add_config_arguments(parser: argparse.ArgumentParser, cls, flags: list[Flag],
                         positionals: list[Flag]) -> None:
    """``--config``, one option per flag, the positionals and ``key=value`` overrides of
    ``cls``; the help of each names its config key and default, the epilog lists every key.

    A flag left out sets nothing, so the preset's value (or the default) stands.
    """
    parser.add_argument("--config", metavar="YAML",
                        help="a YAML file, or the name of a preset in llavac/configs")
    for flag in flags:
        tp, default = key_type_and_default(cls, flag.key)
        shown = f"{flag.help} [{flag.key}, default: {default}]".lstrip()
        kind = ({"action": "store_const", "const": "true"} if tp is bool else {})
        parser.add_argument(flag.option, default=None, help=shown, **kind)
        if flag.old:
            parser.add_argument(flag.old, dest=f"old_{flag.dest}", default=None,
                                help=argparse.SUPPRESS, **kind)
    # The positionals share argparse's one positional list with the overrides (told apart by
    # "="), so that they may stand before or after the options.
    words = " ".join(flag.option for flag in positionals)
    parser.usage = f"%(prog)s {words} [options] [key=value ...]".replace("  ", " ")
    example = "=".join(map(str, config_keys(cls)[-1]))
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help=f"any config key below, e.g. {example}"
                        + "".join(f"; {flag.option}: {flag.help} [{flag.key}]"
                                  for flag in positionals))
    listed = "\n".join(f"  {key}={default}" for key, default in config_keys(cls))
    parser.epilog = f"config keys (key=value, defaults shown):\n{listed}"
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def _flag_values(args: argparse.Namespace, flags: list[Flag]) -> list[tuple[Flag, str]]:
    """The flags given on the command line and their values; a former name warns."""
    given = []
    for flag in flags:
        value = getattr(args, flag.dest)
        old_value = getattr(args, f"old_{flag.dest}", None)
        if value is None and old_value is not None:
            warnings.warn(f"{flag.old} is deprecated: use {flag.option}", FutureWarning,
                          stacklevel=2)
            value = old_value
        if value is not None:
            given.append((flag, value))
    return given


def _positional_values(args: argparse.Namespace, positionals: list[Flag]
                       ) -> list[tuple[Flag, str]]:
    words = [item for item in args.overrides if "=" not in item]
    if len(words) > len(positionals):
        expected = " ".join(flag.option for flag in positionals) or "no positional argument"
        raise ValueError(f"unexpected argument {words[len(positionals)]!r} (expected "
                         f"{expected}, then key=value overrides)")
    return list(zip(positionals[:len(words)], words, strict=True))


def config_from_args(cls: type[C], args: argparse.Namespace, flags: list[Flag],
                     positionals: list[Flag] = ()) -> C:
    """The config of a parsed command line: defaults, ``--config``, then the flags,
    positionals and overrides. A bad flag value is an error naming the flag and its key."""
    config = load_config(cls, args.config)
    given = _flag_values(args, flags) + _positional_values(args, list(positionals))
    overrides = [item for item in args.overrides if "=" in item]
    by_key = {}
    for flag, _ in given:  # RUN and --adapter of robustness both name model.adapter
        key = current_key(flag.key)
        if key in by_key:
            raise ValueError(f"{by_key[key]} and {flag.option} both set {key}: give one")
        by_key[key] = flag.option
    try:
        config = apply_overrides(config, [f"{flag.key}={value}" for flag, value in given]
                                 + overrides)
    except ValueError as error:
        key = getattr(error, "key", None)
        if key in by_key and not any(o.startswith(f"{key}=") for o in overrides):
            raise ValueError(f"{by_key[key]}: {error}") from None
        raise
    for flag in [*flags, *positionals]:
        if flag.required and _value(config, flag.key) is None:
            raise ValueError(f"{flag.option}: required ({flag.help}; config key {flag.key})")
    return config


def _value(config, dotted: str):
    for name in dotted.split("."):
        config = getattr(config, name)
    return config
