"""The host side of the phone benchmark apps in the repository's `apps/` folder: building, staging and driving them.

`build`: toolchain checks and the commands that build and install them (`mi2v app build|install|stage`).
`android_app`: the Android app driven over adb (`run_via_app`: install, push, instrument, read its report).
`ios`: the Core ML XCTest driven with xcodebuild (`run_ios`, `stage_payload`: the Payload folder and its plan).
The bench devices that use them are devices/android_app.py (`--via app`) and devices/ios.py (`--device ios:UDID`);
the apps' own reports are read back into the bench report type (devices/report.py).
"""
