import XCTest
import Mi2vBench

/// The benchmark itself: reads Payload/plan.json (staged by mi2v_export/devices/ios.py), runs every component on
/// every compute unit, and hands the report back three ways: a `MI2V_REPORT_JSON: {…}` line on stdout (xcodebuild
/// shows it), an XCTest attachment named mi2v-report.json (kept in the .xcresult), and a file in the test's
/// temporary folder.
final class CoreMLBenchTests: XCTestCase {
    func testBenchmark() async throws {
        #if canImport(CoreML)
        guard let payload = Bundle.module.url(forResource: "Payload", withExtension: nil) else {
            throw XCTSkip("no Payload folder in the test bundle")
        }
        let planURL = payload.appendingPathComponent("plan.json")
        guard FileManager.default.fileExists(atPath: planURL.path) else {
            throw XCTSkip("no Payload/plan.json: stage artifacts with `python -m mi2v_export.devices.ios stage`")
        }
        let plan = try Plan.parse(Data(contentsOf: planURL), env: ProcessInfo.processInfo.environment)
        let report = await BenchRunner.run(plan: plan, payload: payload)
        let pretty = try Report.serialize(report)
        let compact = try Report.serialize(report, pretty: false)
        print("MI2V_REPORT_JSON: " + (String(data: compact, encoding: .utf8) ?? "{}"))
        let attachment = XCTAttachment(data: pretty, uniformTypeIdentifier: "public.json")
        attachment.name = "mi2v-report.json"
        attachment.lifetime = .keepAlways
        add(attachment)
        try pretty.write(to: FileManager.default.temporaryDirectory.appendingPathComponent("mi2v-report.json"))
        #else
        throw XCTSkip("Core ML is not available on this platform")
        #endif
    }
}
