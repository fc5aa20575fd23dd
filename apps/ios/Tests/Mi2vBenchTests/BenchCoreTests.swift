import XCTest
import Mi2vBench

/// Platform-free tests (`swift test` on a Mac): statistics as report.py computes them, the plan, the JSON form.
final class BenchCoreTests: XCTestCase {
    let samples: [Double] = [5, 1, 4, 2, 3, 10, 6, 7, 9, 8]

    func testNearestRankPercentiles() {
        XCTAssertEqual(Stats.percentile(samples, 10), 1)
        XCTAssertEqual(Stats.percentile(samples, 50), 5)
        XCTAssertEqual(Stats.percentile(samples, 90), 9)
        XCTAssertEqual(Stats.percentile(samples, 99), 10)
        XCTAssertEqual(Stats.stdev(samples), 3.0276503540974917, accuracy: 1e-12)
        XCTAssertEqual(Stats.trimmedMean(samples), 5.5, accuracy: 1e-12)
    }

    func testPlanAndEnvironmentOverrides() throws {
        let text = """
        {"schema": "mi2v.ios-plan/1", "frames": 17, "warmup": 2, "iterations": 5,
         "compute_units": ["cpuOnly", "all"],
         "components": [{"component": "decoder", "file": "decoder.mlpackage", "artifact": {"precision": "fp16"}}]}
        """
        let plan = try Plan.parse(Data(text.utf8), env: ["MI2V_ITERATIONS": "9", "MI2V_COMPUTE_UNITS": "cpuAndGPU"])
        XCTAssertEqual(plan.iterations, 9)
        XCTAssertEqual(plan.warmup, 2)
        XCTAssertEqual(plan.computeUnits, ["cpuAndGPU"])
        XCTAssertEqual(plan.frames, 17)
        XCTAssertThrowsError(try Plan.parse(Data(text.utf8), env: ["MI2V_COMPUTE_UNITS": "npu"]))
    }

    func testReportJSON() throws {
        let run = RunData(loadMs: 12, samplesMs: [2, 4, 3], warmupMs: [9], peakRssKb: nil, backend: "all")
        let ok = ComponentData(component: "decoder", status: "ok", error: nil, artifact: [:],
                               runtime: ["backend": "all", "compile_ms": Double.nan], runs: [run])
        let failed = ComponentData(component: "encoder", status: "failed", error: "cpuOnly: bad", artifact: [:],
                                   runtime: [:], runs: [])
        let report = Report.build(device: ["model": "iPhone15,4"], protocolInfo: ["warmup": 1], conditions: [:],
                                  frames: nil, components: [ok, failed], warnings: [], tool: [:])
        XCTAssertEqual(report["status"] as? String, "partial")
        let data = try Report.serialize(report)
        let back = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        XCTAssertEqual(back?["schema"] as? String, "mi2v.bench/1")
        XCTAssertEqual(back?["error"] as? String, "cpuOnly: bad")
    }

    func testOutputCheckAsParity() throws {
        let ref: [Float] = [1, -2, 3, 4]
        let psnrGate = Gate(metric: "psnr_db", op: ">=", threshold: 40)
        let off = try OutputCheck.compare([[1, -2, 3, 5]], [ref], gate: psnrGate, runtime: "rt", sets: 1)
        XCTAssertEqual(off["psnr_db"] as? Double ?? 0, 20 * log10(4 / 0.5), accuracy: 1e-12)
        XCTAssertEqual(off["rel_l2"] as? Double ?? 0, 1 / 30.0.squareRoot(), accuracy: 1e-12)
        XCTAssertEqual(off["passed"] as? Bool, false)
        XCTAssertEqual(off["gate"] as? String, "psnr_db >= 40")
        let same = try OutputCheck.compare([ref], [ref], gate: psnrGate, runtime: "rt", sets: 1)
        XCTAssertEqual(same["psnr_db"] as? String, "inf")
        XCTAssertEqual(same["passed"] as? Bool, true)
        let nan = try OutputCheck.compare([[1, .nan, 3, 4]], [ref], gate: Gate(metric: "rel_l2", op: "<=", threshold: 1),
                                          runtime: "rt", sets: 1)
        XCTAssertEqual(nan["passed"] as? Bool, false)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("mi2v-check.bin")
        try Data(ref.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian) { Array($0) } }).write(to: url)
        XCTAssertEqual(try OutputCheck.readFloats(url, count: 4), ref)
        XCTAssertThrowsError(try OutputCheck.readFloats(url, count: 5))
        let text = """
        {"schema": "mi2v.ios-plan/1", "components": [{"component": "decoder", "file": "decoder.mlpackage",
         "check": {"set": 0, "sets": 2, "gate": {"metric": "rel_l2", "op": "<=", "threshold": 0.0001},
                   "inputs": [{"name": "latent", "path": "check/decoder.in0.bin", "shape": [1, 4], "dtype": "float32"}],
                   "expected": [{"name": "video", "path": "check/decoder.out0.bin", "shape": [2, 3], "dtype": "float32"}]}}]}
        """
        let check = try XCTUnwrap(try Plan.parse(Data(text.utf8)).components[0].check)
        XCTAssertEqual(check.expected[0].count, 6)
        XCTAssertEqual(check.gate.text, "rel_l2 <= 0.0001")
    }
}
