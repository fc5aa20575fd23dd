"""The simulated phone: a test double kept apart from the production path.

`phone.SimulatedPhone` is a loopback adb device daemon the real adb client connects to; `host_runners` are the
stand-ins of the phone runners it has on its PATH. It ships with the package (`mi2v devices simulate` runs it, for CI
without hardware), but no production module imports it: `mi2v bench` drives it exactly like a phone and learns that
it is simulated only from the property it answers (`ro.mi2v.simulated=1`).
"""
