// Platform-free part of the iOS benchmark (Foundation only): the plan, statistics and the report in mi2v's bench
// schema (mi2v.bench/1, mi2v_export/devices/report.py). The Core ML part is CoreMLBench.swift.
import Foundation

public let reportSchema = "mi2v.bench/1"
public let planSchema = "mi2v.ios-plan/1"
public let runnerName = "ios-xctest"
public let componentNames = ["encoder", "denoiser", "decoder"]
/// The compute-unit choices, in the order they are measured (MLComputeUnits case names).
public let computeUnitNames = ["cpuOnly", "cpuAndGPU", "cpuAndNeuralEngine", "all"]

public enum BenchError: Error, CustomStringConvertible {
    case badPlan(String)
    case unsupportedInput(String)
    case failed(String)

    public var description: String {
        switch self {
        case .badPlan(let why): return "plan.json: \(why)"
        case .unsupportedInput(let why): return why
        case .failed(let why): return why
        }
    }
}

/// An optional as a JSON value: the value, or NSNull (JSON null).
public func orNull(_ value: Any?) -> Any { value ?? NSNull() }

// MARK: - statistics (as report.py: nearest-rank percentiles, sample stdev, 10% trimmed mean)

public enum Stats {
    public static func percentile(_ samples: [Double], _ q: Double) -> Double {
        precondition(!samples.isEmpty, "no samples")
        let ordered = samples.sorted()
        let rank = max(1, Int((q / 100.0 * Double(ordered.count)).rounded(.up)))
        return ordered[min(rank, ordered.count) - 1]
    }

    public static func mean(_ s: [Double]) -> Double { s.reduce(0, +) / Double(s.count) }

    public static func stdev(_ s: [Double]) -> Double {
        guard s.count > 1 else { return 0 }
        let m = mean(s)
        return (s.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(s.count - 1)).squareRoot()
    }

    public static func trimmedMean(_ s: [Double], _ proportion: Double = 0.1) -> Double {
        let ordered = s.sorted()
        let k = Int(Double(ordered.count) * proportion)
        let middle = ordered.count - 2 * k > 0 ? Array(ordered[k..<(ordered.count - k)]) : ordered
        return mean(middle)
    }

    public static func median(_ s: [Double]) -> Double {
        let o = s.sorted()
        let n = o.count
        return n % 2 == 1 ? o[n / 2] : (o[n / 2 - 1] + o[n / 2]) / 2
    }

    public static func latency(_ s: [Double]) -> [String: Any] {
        guard !s.isEmpty else { return ["n": 0] }
        let o = s.sorted()
        return ["n": s.count, "min": o[0], "p10": percentile(s, 10), "p50": percentile(s, 50),
                "p90": percentile(s, 90), "p99": percentile(s, 99), "max": o[o.count - 1], "mean": mean(s),
                "stdev": stdev(s), "trimmed_mean_10": trimmedMean(s, 0.1)]
    }
}

// MARK: - the plan written by the host (mi2v_export/devices/ios.py)

public struct PlanComponent {
    public let component: String
    public let file: String  // a .mlpackage (or .mlmodel / .mlmodelc) inside the Payload folder
    public let artifact: [String: Any]
    public var check: CheckSpec? = nil  // the output check the host staged (mi2v_export/apps/check_files.py)
}

/// A raw little-endian tensor file in the Payload folder (path relative to it).
public struct TensorFile {
    public let name: String
    public let path: String
    public let shape: [Int]
    public let dtype: String
    public var count: Int { shape.reduce(1, *) }
}

/// The gate of mi2v verify (parity.Gate): metric "psnr_db" or "rel_l2", op ">=" or "<=".
public struct Gate {
    public let metric: String
    public let op: String
    public let threshold: Double

    public init(metric: String, op: String, threshold: Double) {
        self.metric = metric
        self.op = op
        self.threshold = threshold
    }

    public func passes(psnrDb: Double, relL2: Double, finite: Bool) -> Bool {
        let value = metric == "psnr_db" ? psnrDb : relL2
        if !finite || value.isNaN { return false }
        return op == "<=" ? value <= threshold : value >= threshold
    }

    public var text: String { "\(metric) \(op) \(Decimal(string: String(threshold)) ?? Decimal(threshold))" }
}

/// The first test-vector set's inputs and expected outputs (raw files), and the gate.
public struct CheckSpec {
    public let inputs: [TensorFile]
    public let expected: [TensorFile]
    public let gate: Gate
    public let sets: Int

    static func parse(_ c: [String: Any]?, _ name: String) throws -> CheckSpec? {
        guard let c = c else { return nil }
        func files(_ key: String) throws -> [TensorFile] {
            guard let list = c[key] as? [[String: Any]] else { throw BenchError.badPlan("\(name) check has no \(key)") }
            return try list.map { t in
                guard let path = t["path"] as? String else { throw BenchError.badPlan("\(name) check \(key) has no path") }
                return TensorFile(name: t["name"] as? String ?? "tensor", path: path,
                                  shape: (t["shape"] as? [NSNumber] ?? []).map { $0.intValue },
                                  dtype: t["dtype"] as? String ?? "float32")
            }
        }
        guard let g = c["gate"] as? [String: Any], let threshold = (g["threshold"] as? NSNumber)?.doubleValue else {
            throw BenchError.badPlan("\(name) check has no gate")
        }
        let gate = Gate(metric: g["metric"] as? String ?? "psnr_db", op: g["op"] as? String ?? ">=", threshold: threshold)
        return CheckSpec(inputs: try files("inputs"), expected: try files("expected"), gate: gate,
                         sets: (c["sets"] as? NSNumber)?.intValue ?? 1)
    }
}

/// The output check's numbers, as parity.py computes them: PSNR = 20·log10(max|ref| / RMSE), rel L2 =
/// ||y - ref|| / ||ref||, over all outputs together; NaN/Inf in the outputs count as 0 and fail the gate.
public enum OutputCheck {
    /// A raw little-endian float32 file of `count` values.
    public static func readFloats(_ url: URL, count: Int) throws -> [Float] {
        let data = try Data(contentsOf: url)
        guard data.count == count * 4 else {
            throw BenchError.failed("\(url.lastPathComponent): \(data.count) bytes, expected \(count * 4) (float32)")
        }
        return data.withUnsafeBytes { raw in
            (0..<count).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
    }

    public static func compare(_ outputs: [[Float]], _ expected: [[Float]], gate: Gate, runtime: String,
                               sets: Int) throws -> [String: Any] {
        guard outputs.count == expected.count else {
            throw BenchError.failed("\(outputs.count) outputs against \(expected.count) expected outputs")
        }
        var sq = 0.0, refSq = 0.0, peak = 0.0, maxAbs = 0.0, n = 0, finite = true
        for (y, r) in zip(outputs, expected) {
            guard y.count == r.count else { throw BenchError.failed("an output has \(y.count) values, expected \(r.count)") }
            for i in 0..<y.count {
                var v = Double(y[i])
                if !v.isFinite { finite = false; v = 0 }
                let ref = Double(r[i])
                let d = v - ref
                sq += d * d
                refSq += ref * ref
                peak = max(peak, abs(ref))
                maxAbs = max(maxAbs, abs(d))
            }
            n += y.count
        }
        let rms = n > 0 ? (sq / Double(n)).squareRoot() : 0
        let psnr = rms == 0 ? Double.infinity : (peak == 0 ? -Double.infinity : 20 * log10(peak / rms))
        let relL2 = refSq == 0 ? (sq == 0 ? 0 : Double.infinity) : (sq / refSq).squareRoot()
        return ["psnr_db": jsonNumber(psnr), "rel_l2": jsonNumber(relL2), "max_abs": jsonNumber(maxAbs),
                "passed": gate.passes(psnrDb: psnr, relL2: relL2, finite: finite), "finite": finite, "sets": sets,
                "gate": gate.text, "runtime": runtime]
    }

    public static func notChecked(_ reason: String) -> [String: Any] { ["passed": NSNull(), "reason": reason] }

    /// JSON has no inf/nan: as parity.py, write them as strings.
    public static func jsonNumber(_ v: Double) -> Any {
        if v.isNaN { return "nan" }
        if v.isInfinite { return v > 0 ? "inf" : "-inf" }
        return v
    }
}

public struct Plan {
    public var frames: Int?
    public var warmup: Int
    public var iterations: Int
    public var computeUnits: [String]
    public var components: [PlanComponent]

    /// Parse plan.json; MI2V_WARMUP / MI2V_ITERATIONS / MI2V_COMPUTE_UNITS in `env` override it (xcodebuild passes
    /// TEST_RUNNER_MI2V_… to the test process without the prefix).
    public static func parse(_ data: Data, env: [String: String] = [:]) throws -> Plan {
        guard let root = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw BenchError.badPlan("not a JSON object")
        }
        guard root["schema"] as? String == planSchema else {
            throw BenchError.badPlan("schema \(root["schema"] ?? "none") is not \(planSchema)")
        }
        var comps: [PlanComponent] = []
        for item in root["components"] as? [[String: Any]] ?? [] {
            guard let name = item["component"] as? String, componentNames.contains(name) else {
                throw BenchError.badPlan("a component has no valid name (encoder, denoiser or decoder)")
            }
            guard let file = item["file"] as? String else { throw BenchError.badPlan("\(name) has no file") }
            comps.append(PlanComponent(component: name, file: file, artifact: item["artifact"] as? [String: Any] ?? [:],
                                       check: try CheckSpec.parse(item["check"] as? [String: Any], name)))
        }
        if comps.isEmpty { throw BenchError.badPlan("no components") }
        var plan = Plan(frames: root["frames"] as? Int, warmup: root["warmup"] as? Int ?? 3,
                        iterations: root["iterations"] as? Int ?? 20,
                        computeUnits: root["compute_units"] as? [String] ?? computeUnitNames, components: comps)
        if let w = env["MI2V_WARMUP"].flatMap({ Int($0) }) { plan.warmup = w }
        if let n = env["MI2V_ITERATIONS"].flatMap({ Int($0) }) { plan.iterations = n }
        if let u = env["MI2V_COMPUTE_UNITS"], !u.isEmpty {
            plan.computeUnits = u.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
        }
        if plan.iterations < 1 || plan.warmup < 0 { throw BenchError.badPlan("iterations must be ≥ 1, warm-up ≥ 0") }
        for u in plan.computeUnits where !computeUnitNames.contains(u) {
            throw BenchError.badPlan("unknown compute unit \(u) (use \(computeUnitNames.joined(separator: ", ")))")
        }
        return plan
    }
}

// MARK: - results and the report

public struct RunData {
    public var loadMs: Double?
    public var samplesMs: [Double]
    public var warmupMs: [Double]
    public var peakRssKb: Int?
    public var backend: String?

    public init(loadMs: Double?, samplesMs: [Double], warmupMs: [Double], peakRssKb: Int?, backend: String?) {
        self.loadMs = loadMs
        self.samplesMs = samplesMs
        self.warmupMs = warmupMs
        self.peakRssKb = peakRssKb
        self.backend = backend
    }

    func dictionary() -> [String: Any] {
        let measured = peakRssKb != nil
        return ["load_ms": orNull(loadMs), "samples_ms": samplesMs, "warmup_ms": warmupMs,
                "peak_rss_kb": orNull(peakRssKb), "peak_rss_scope": orNull(measured ? "process" : nil),
                "peak_rss_method": orNull(measured ? "phys-footprint-peak" : nil), "exit_code": NSNull(),
                "first_iteration_ms": orNull(warmupMs.first ?? samplesMs.first), "backend": orNull(backend),
                "threads": NSNull(), "log": NSNull()]
    }
}

/// One (component, compute unit) measurement. The report lists one entry per pair; runtime.backend names the unit.
public struct ComponentData {
    public var component: String
    public var status: String  // ok | failed | skipped
    public var error: String?
    public var artifact: [String: Any]
    public var runtime: [String: Any]
    public var runs: [RunData]
    public var outputCheck: [String: Any]? = nil

    public init(component: String, status: String, error: String?, artifact: [String: Any], runtime: [String: Any],
                runs: [RunData], outputCheck: [String: Any]? = nil) {
        self.component = component
        self.status = status
        self.error = error
        self.artifact = artifact
        self.runtime = runtime
        self.runs = runs
        self.outputCheck = outputCheck
    }

    public var samples: [Double] { runs.flatMap { $0.samplesMs } }

    public func summary() -> [String: Any] {
        var lat = Stats.latency(samples)
        if !samples.isEmpty { lat["run_medians"] = runs.filter { !$0.samplesMs.isEmpty }.map { Stats.percentile($0.samplesMs, 50) } }
        let loads = runs.compactMap { $0.loadMs }
        let rss = runs.compactMap { $0.peakRssKb }.max()
        return ["latency_ms": lat, "load_ms": loads.isEmpty ? [String: Any]() : ["median": Stats.median(loads)],
                "peak_rss_kb": orNull(rss)]
    }

    func dictionary() -> [String: Any] {
        var d: [String: Any] = ["component": component, "status": status, "error": orNull(error), "artifact": artifact,
                                "runtime": runtime, "runs": runs.map { $0.dictionary() }, "summary": summary()]
        if let check = outputCheck { d["output_check"] = check }
        return d
    }
}

public enum Report {
    public static func status(_ comps: [ComponentData]) -> String {
        let states = Set(comps.map { $0.status })
        if !states.contains("ok") { return "failed" }
        return states == ["ok"] ? "ok" : "partial"
    }

    public static func utcNow() -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd'T'HH:mm:ss'Z'"
        return f.string(from: Date())
    }

    /// The whole report. With several compute units the per-frame headline is per unit, so it is left to the host
    /// (mi2v_export.devices.ios splits this report into one report per compute unit).
    public static func build(device: [String: Any], protocolInfo: [String: Any], conditions: [String: Any],
                             frames: Int?, components: [ComponentData], warnings: [String],
                             tool: [String: Any]) -> [String: Any] {
        var proto = protocolInfo
        proto["percentile_method"] = "nearest-rank"
        return ["schema": reportSchema, "created_utc": utcNow(), "status": status(components),
                "error": orNull(components.first(where: { $0.error != nil })?.error), "tool": tool,
                "host": [String: Any](), "device": device, "protocol": proto, "conditions": conditions,
                "frames": orNull(frames), "components": components.map { $0.dictionary() },
                "per_frame_ms": [String: Any](), "warnings": warnings]
    }

    /// JSON text; NaN / infinity (which JSON cannot hold) become null.
    public static func serialize(_ report: [String: Any], pretty: Bool = true) throws -> Data {
        try JSONSerialization.data(withJSONObject: sanitize(report),
                                   options: pretty ? [.prettyPrinted, .sortedKeys] : [.sortedKeys])
    }

    static func sanitize(_ v: Any) -> Any {
        switch v {
        case let d as Double:
            if d.isFinite { return d }
            return NSNull()
        case let m as [String: Any]: return m.mapValues { sanitize($0) }
        case let a as [Any]: return a.map { sanitize($0) }
        default: return v
        }
    }
}
