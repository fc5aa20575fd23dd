// swift-tools-version:5.9
// mi2v iOS benchmark: an XCTest that compiles each exported .mlpackage on the device (MLModel.compileModel), loads it
// for each compute-unit choice and times predictions, then reports in mi2v's bench schema (mi2v.bench/1).
//
//   make ios                                  → xcodebuild build-for-testing (python -m mi2v_export.devices.ios build)
//   mi2v bench --device ios:UDID (macOS only) → stages Tests/Mi2vBenchTests/Payload, runs `xcodebuild test` on the
//                                               phone and collects the report (mi2v_export/devices/ios.py)
//   swift test                                → the platform-free unit tests (statistics, JSON) on a Mac
import PackageDescription

let package = Package(
    name: "Mi2vBench",
    platforms: [.iOS(.v16), .macOS(.v13)],
    products: [
        .library(name: "Mi2vBench", targets: ["Mi2vBench"]),
    ],
    targets: [
        .target(name: "Mi2vBench"),
        .testTarget(
            name: "Mi2vBenchTests",
            dependencies: ["Mi2vBench"],
            // Copied as is (not compiled by Xcode): the models are compiled on the device, and that time is reported.
            resources: [.copy("Payload")]
        ),
    ]
)
