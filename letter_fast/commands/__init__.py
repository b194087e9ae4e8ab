"""Subcommands of the ``letter-fast`` CLI, one module each (``add_parser`` + ``run``)."""
