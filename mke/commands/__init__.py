"""One module per ``mke`` subcommand; see mke.cli.COMMANDS."""
