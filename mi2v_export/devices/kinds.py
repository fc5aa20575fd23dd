"""Every device kind of `mi2v bench`: importing this module imports each kind's module, which registers its kind
(devices/registry.py). The bench loop (devices/bench.py) imports it; none of the kind modules imports it or the loop.

A new device kind is a module beside these (its `BenchDevice` and its `register(DeviceKind(...))`) and its name
below. The order is the order `--device`'s error message lists the kinds in.
"""

from . import host, android, android_app, ios  # noqa: F401  (imported for their registrations)
