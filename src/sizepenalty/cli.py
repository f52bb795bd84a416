"""The ``sizepenalty`` command line: one subcommand per pipeline stage.

Kept thin: it parses arguments, loads the validated config, calls library functions and turns
expected failures (bad config, bad input data) into one clear line on stderr and exit code 2.
Heavy imports (torch, MONAI, MLflow) happen inside the subcommands that need them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from sizepenalty import __version__


class UserError(Exception):
    """An error caused by input the user controls; printed as one line, exit code 2."""


Handler = Callable[[argparse.Namespace], int | None]
_COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Handler]] = []


def command(name: str, help_text: str, configure: Callable[[argparse.ArgumentParser], None]):
    """Register a subcommand: ``configure`` adds its arguments, the decorated function runs it."""

    def wrap(func: Handler) -> Handler:
        _COMMANDS.append((name, help_text, configure, func))
        return func

    return wrap


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", "-c", default="config.yaml", help="study config YAML (default: %(default)s)"
    )


def _no_args(p: argparse.ArgumentParser) -> None:
    pass


@command(
    "validate-config", "validate a study config and print it with defaults filled", _add_config
)
def _validate_config(args: argparse.Namespace) -> int:
    import yaml

    from sizepenalty.config import load_config

    cfg = load_config(args.config)
    print(yaml.safe_dump(cfg.raw, sort_keys=False), end="")
    print(f"# {args.config}: valid (config hash {cfg.digest()})", file=sys.stderr)
    return 0


@command("losses", "list the loss combinations with their terms and weights", _add_config)
def _losses(args: argparse.Namespace) -> int:
    from sizepenalty.config import load_config
    from sizepenalty.losses import combo_id
    from sizepenalty.study import loss_from_config

    cfg = load_config(args.config)
    for name in cfg.combo_names:
        loss = loss_from_config(cfg, name)
        terms = " + ".join(f"{w:g}*{k}" for k, w in loss.weights.items())
        print(f"{name:5s} id={combo_id(name):4s} {terms}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sizepenalty",
        description="Size Penalty Loss study: data, training, inference, metrics and report stages.",
    )
    parser.add_argument("--version", action="version", version=f"sizepenalty {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<stage>")
    for name, help_text, configure, func in _COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        configure(p)
        p.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from sizepenalty.config import ConfigError

    try:
        return int(args.func(args) or 0)
    except (UserError, ConfigError) as exc:
        print(f"sizepenalty {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
