"""The commands of ``gkl``, one module per command: ``add_parser(sub)`` adds its argparse sub-parser(s),
``run(args)`` executes the parsed arguments and returns the exit status (bad input raises InputError).

``gkl.commands.run``: ``gkl fit`` and the task verbs (from :mod:`gkl.tasks`); ``gkl.commands.evaluate``:
``gkl evaluate``. :mod:`gkl.cli` builds the parser from them and maps exit codes.
"""
