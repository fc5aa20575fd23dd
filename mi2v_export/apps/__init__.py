"""The host side of the phone benchmark apps in the repository's `apps/` folder.

`build`: toolchain checks and the commands that build and install them (`mi2v app build|install|stage`).
`android_app`: `mi2v bench --via app` — the Android app driven over adb (`AppDevice` in the bench loop).
`ios`: `mi2v bench --device ios:UDID` — the Core ML XCTest driven with xcodebuild (`IOSDevice`, one per compute unit).
Both devices implement `devices.bench.BenchDevice`; the app's own report is read back into the same report type.
"""
