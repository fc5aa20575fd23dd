"""CLI command modules; each exposes `register(app)` (see mi2v_export.cli.COMMAND_MODULES). Shared by them:
`_options.py` (the options several commands take, declared once), `_render.py` (how a command prints its result,
progress and notes) and `_native_output.py` (native libraries' output kept off the terminal without -v)."""
