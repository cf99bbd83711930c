"""One module per `tritonscale` subcommand; each exposes ``add_arguments`` and ``run``."""
