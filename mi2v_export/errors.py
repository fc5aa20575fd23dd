"""User-facing errors: the CLI prints these as one line and exits non-zero; anything else is a bug."""


class Mi2vError(Exception):
    """Base class for mistakes a user can fix (bad input, missing tool, device fault)."""

    exit_code = 2


class BadInputError(Mi2vError):
    """An argument, shape, resolution or option the tool cannot accept."""


class CheckpointError(Mi2vError):
    """A checkpoint file that is unreadable, unsafe, or does not match the model."""


class MissingDependencyError(Mi2vError):
    """An SDK, runtime or platform that this command needs is not available."""

    exit_code = 3


class VerificationError(Mi2vError):
    """An exported artifact failed its numerical parity gate."""

    exit_code = 4


class DeviceError(Mi2vError):
    """A phone / adb / runner problem."""

    exit_code = 5


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (libraries append stack dumps and hints), or its type name."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
