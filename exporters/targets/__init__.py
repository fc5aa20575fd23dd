"""One module (or package) per export target, each defining an `Exporter` registered with `@register`
(exporters/base.py): `base.discover` imports every module here, nothing lists them.

Importing a target module stays torch-free (the CLI reads the registry when it starts): torch, and our modules
built on it, are imported inside the methods that export, inspect and run.
"""
