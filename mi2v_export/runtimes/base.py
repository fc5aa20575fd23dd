"""What every runtime adapter is: a `Runtime` (which artifacts it accepts, whether it can run here, its version,
`load`) and the `Session` a load returns (named inputs and outputs, `run`).

A session's `run` is three steps so that a benchmark can time the runtime's own call alone: `prepare` (cast the
numpy inputs to the artifact's input dtypes, in the runtime's own form), `execute` (the one native call: an
`InferenceSession.run`, a `Method.execute`, a `predict`) and `collect` (the outputs as numpy arrays by name).
Torch-free: adapters import their runtime inside `available` / `load`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from . import dtypes

Inputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a loaded artifact; dynamic axes are strings or None."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str  # dtypes name: "float32", "int64", "bfloat16", …

    def static_shape(self, fill: int = 1) -> tuple[int, ...]:
        """The shape with every dynamic axis set to `fill`."""
        return tuple(d if isinstance(d, int) and d >= 0 else fill for d in self.shape)

    def ones(self) -> np.ndarray:
        """Ones of the static shape (the phone runners' fill), in the numpy dtype holding this dtype."""
        return np.ones(self.static_shape(), dtype=dtypes.numpy_dtype(self.dtype))


class Session(ABC):
    """A loaded artifact. `inputs` / `outputs` in the artifact's order; `backend` is what executes it."""

    runtime: str  # the registry name of the runtime that loaded it
    backend: str  # "cpu", "xnnpack", "portable", "qnn-htp-simulator", "cpu_and_ne", "pytorch", …
    path: Path | None
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    threads: int | None = None

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def input_shapes(self) -> dict[str, tuple]:
        return {t.name: tuple(t.shape) for t in self.inputs}

    def ones(self) -> Inputs:
        """Inputs of ones at the static input shapes."""
        return {t.name: t.ones() for t in self.inputs}

    @abstractmethod
    def prepare(self, inputs: Mapping[str, np.ndarray]) -> Any:
        """The inputs (by name) cast to the input dtypes, in the form `execute` takes; KeyError names a missing one."""

    @abstractmethod
    def execute(self, prepared: Any) -> Any:
        """One call of the runtime on prepared inputs (what a benchmark times)."""

    @abstractmethod
    def collect(self, raw: Any) -> Inputs:
        """`execute`'s result as numpy arrays by output name (copies: the runtime may reuse its buffers)."""

    def run(self, inputs: Mapping[str, np.ndarray]) -> Inputs:
        return self.collect(self.execute(self.prepare(inputs)))

    def close(self) -> None:
        """Release the runtime's objects (the session is unusable afterwards)."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Runtime(ABC):
    """One way of running an artifact on this machine, registered by name (runtimes.registry)."""

    name: str  # recorded as verified_on[].runtime; `mi2v verify --runtime`
    family: ClassVar[str]  # "onnxruntime" | "executorch" | "coreml" | "litert" | "pytorch": `mi2v bench --runtime`
    suffix: ClassVar[str | None]  # the artifact file suffix it loads; None for a stand-in that runs a module
    package: ClassVar[str | None] = None  # the distribution whose version `version()` reports
    # modules a process imports to run this runtime at all: the baseline of a measured runtime memory
    # (runtimes/measure.py) imports them without loading a model
    imports: ClassVar[tuple[str, ...]] = ()
    # whether `mi2v bench` times this family (on the host and through a phone runner), and how `--runtime auto`
    # ranks it (lower first); None: verify / generate only
    bench_order: ClassVar[int | None] = None
    # the one native call a benchmark times (`Session.execute`), as the report names it
    timed_region: ClassVar[str | None] = None
    # whether a fresh process running it here says what the artifact needs on a device (runtimes/measure.py);
    # False for a simulator or a stand-in, whose memory is the host's
    measures_memory: ClassVar[bool] = True

    @abstractmethod
    def accepts(self, entry: Any) -> bool:
        """Whether this runtime runs the manifest entry (anything with `.target` and `.delegate`)."""

    @abstractmethod
    def available(self) -> str | None:
        """None when it can run here, else one line saying why not (and what to install)."""

    @abstractmethod
    def load(self, path: str | os.PathLike | None, entry: Any = None, **options: Any) -> Session:
        """Load the artifact; MissingDependencyError when the runtime is absent, BadInputError when the file
        cannot be loaded (one line each). `entry` (a manifest ArtifactEntry) gives I/O names where the file has none."""

    def version(self) -> str | None:
        return package_version(self.package) if self.package else None

    def __repr__(self) -> str:
        return f"<runtime {self.name}>"


def package_version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def missing(module: str, install: str) -> str | None:
    """None when `module` can be imported, else the one-line reason naming what to install (nothing imported)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module set to None in sys.modules
        found = False
    return None if found else f"{module} is not installed ({install})"


@contextlib.contextmanager
def quiet_fd(fd: int = 2) -> Iterator[None]:
    """Silence a native library's writes to a file descriptor (ExecuTorch's cpuinfo chatter, the QNN banners on
    stderr), unless `mi2v -v` asked for debug output."""
    if logging.getLogger("mi2v").isEnabledFor(logging.DEBUG):
        yield
        return
    try:
        saved = os.dup(fd)
    except OSError:  # no such descriptor (embedded interpreters)
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
