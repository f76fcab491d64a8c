"""The `devpush` program: a bare component name (`devpush app|worker|monitor`) runs that
component without loading the command-line interface; anything else (options, help, every
other command) goes to the CLI. Both sit below this module: neither imports it."""

from __future__ import annotations

import sys


def main() -> None:
    from devpush.components import COMPONENTS

    args = sys.argv[1:]
    if len(args) == 1 and args[0] in COMPONENTS:
        COMPONENTS[args[0]]()
        return
    from devpush.cli import main as cli_main

    cli_main()
