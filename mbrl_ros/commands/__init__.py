"""Subcommands of the ``mbrl-ros`` CLI, one module each (``add_parser`` + ``run``)."""
