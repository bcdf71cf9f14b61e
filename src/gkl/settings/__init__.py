"""The config layer: every typed settings dataclass of gkl, importable without any implementation.

A settings class holds values and checks them (``__post_init__``); it never imports
the engine, objectives, attacks, models or data code that consumes it. ``gkl.config``
builds these from YAML.
"""
