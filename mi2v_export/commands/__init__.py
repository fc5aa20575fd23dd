"""CLI command modules; each exposes `register(app)` (see mi2v_export.cli.COMMAND_MODULES)."""
