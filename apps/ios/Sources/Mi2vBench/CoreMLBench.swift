// The Core ML side: compile each .mlpackage on the device, load it per compute-unit choice, time predictions.
#if canImport(CoreML)
import CoreML
import Foundation

public enum CoreMLBench {
    static func computeUnits(_ name: String) -> MLComputeUnits {
        switch name {
        case "cpuOnly": return .cpuOnly
        case "cpuAndGPU": return .cpuAndGPU
        case "cpuAndNeuralEngine": return .cpuAndNeuralEngine
        default: return .all
        }
    }

    static func nowMs() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e6 }

    /// The process's peak physical footprint so far (kB), from task_vm_info; nil where the call fails.
    public static func peakFootprintKb() -> Int? {
        var info = task_vm_info_data_t()
        var count = mach_msg_type_number_t(MemoryLayout<task_vm_info_data_t>.size / MemoryLayout<natural_t>.size)
        let kr = withUnsafeMutablePointer(to: &info) { pointer in
            pointer.withMemoryRebound(to: integer_t.self, capacity: Int(count)) {
                task_info(mach_task_self_, task_flavor_t(TASK_VM_INFO), $0, &count)
            }
        }
        guard kr == KERN_SUCCESS else { return nil }
        return Int(info.ledger_phys_footprint_peak / 1024)
    }

    /// Compile a .mlpackage / .mlmodel into a .mlmodelc on this device; returns (compiled URL, milliseconds).
    public static func compile(_ url: URL) async throws -> (URL, Double) {
        let t0 = nowMs()
        let compiled = try await MLModel.compileModel(at: url)
        return (compiled, nowMs() - t0)
    }

    /// Inputs of ones for every multi-array input, built once before timing (the first enumerated shape, or the
    /// lower bound of each range, for flexible inputs).
    public static func onesInputs(_ model: MLModel) throws -> MLFeatureProvider {
        var feeds: [String: MLFeatureValue] = [:]
        for (name, desc) in model.modelDescription.inputDescriptionsByName {
            guard desc.type == .multiArray, let c = desc.multiArrayConstraint else {
                throw BenchError.unsupportedInput("input \(name) is not a multi-array: the benchmark fills only those")
            }
            var shape = c.shape
            if shape.isEmpty, let first = c.shapeConstraint.enumeratedShapes.first { shape = first }
            if shape.isEmpty {
                shape = c.shapeConstraint.sizeRangeForDimension.map { NSNumber(value: max(1, $0.rangeValue.location)) }
            }
            let array = try MLMultiArray(shape: shape, dataType: c.dataType)
            let n = array.count
            switch c.dataType {
            case .float32:
                array.dataPointer.bindMemory(to: Float.self, capacity: n).initialize(repeating: 1, count: n)
            case .double:
                array.dataPointer.bindMemory(to: Double.self, capacity: n).initialize(repeating: 1, count: n)
            case .int32:
                array.dataPointer.bindMemory(to: Int32.self, capacity: n).initialize(repeating: 1, count: n)
            case .float16:
                // 0x3C00 is 1.0 in IEEE half precision
                array.dataPointer.bindMemory(to: UInt16.self, capacity: n).initialize(repeating: 0x3C00, count: n)
            default:
                for i in 0..<n { array[i] = NSNumber(value: 1.0) }
            }
            feeds[name] = MLFeatureValue(multiArray: array)
        }
        return try MLDictionaryFeatureProvider(dictionary: feeds)
    }

    /// One component on one compute unit: cold load (first load of the compiled model for this unit in this
    /// process: includes the GPU/ANE specialisation), warm load (the same again), then `warmup` discarded and
    /// `iterations` timed predictions on one loaded model.
    public static func measure(component: String, compiledURL: URL, compileMs: Double?, unit: String, warmup: Int,
                               iterations: Int, artifact: [String: Any], check: CheckSpec? = nil,
                               payload: URL? = nil) -> ComponentData {
        var runtime: [String: Any] = ["name": "coreml", "runner": runnerName, "mode": "app", "backend": unit,
                                      "compute_units": unit, "compile_ms": orNull(compileMs),
                                      "log_channel": "xctest", "inputs": "ones"]
        do {
            let config = MLModelConfiguration()
            config.computeUnits = computeUnits(unit)
            var t0 = nowMs()
            _ = try MLModel(contentsOf: compiledURL, configuration: config)
            let coldLoad = nowMs() - t0
            t0 = nowMs()
            let model = try MLModel(contentsOf: compiledURL, configuration: config)
            let warmLoad = nowMs() - t0
            runtime["cold_load_ms"] = coldLoad
            runtime["warm_load_ms"] = warmLoad
            let input = try onesInputs(model)
            var warm: [Double] = []
            var samples: [Double] = []
            for i in 0..<(warmup + iterations) {
                let s = nowMs()
                _ = try model.prediction(from: input)
                let ms = nowMs() - s
                if i < warmup { warm.append(ms) } else { samples.append(ms) }
            }
            let run = RunData(loadMs: coldLoad, samplesMs: samples, warmupMs: warm, peakRssKb: peakFootprintKb(),
                              backend: unit)
            var outputCheck: [String: Any]? = nil
            if let check = check, let payload = payload {
                outputCheck = checkOutputs(model, check, payload: payload, runtime: "coreml-xctest/\(unit)")
            }
            return ComponentData(component: component, status: "ok", error: nil, artifact: artifact,
                                 runtime: runtime, runs: [run], outputCheck: outputCheck)
        } catch {
            return ComponentData(component: component, status: "failed",
                                 error: "\(unit): \(error.localizedDescription)", artifact: artifact,
                                 runtime: runtime, runs: [])
        }
    }
}

extension CoreMLBench {
    /// One untimed prediction on the host's test-vector inputs, compared with the expected outputs (OutputCheck in
    /// BenchCore.swift); a failure to read or run is `{passed: null, reason}`.
    static func checkOutputs(_ model: MLModel, _ check: CheckSpec, payload: URL, runtime: String) -> [String: Any] {
        do {
            var feeds: [String: MLFeatureValue] = [:]
            for t in check.inputs {
                feeds[t.name] = MLFeatureValue(multiArray: try rawArray(t, payload.appendingPathComponent(t.path)))
            }
            let result = try model.prediction(from: try MLDictionaryFeatureProvider(dictionary: feeds))
            var got: [[Float]] = []
            var want: [[Float]] = []
            for e in check.expected {
                guard let array = result.featureValue(for: e.name)?.multiArrayValue else {
                    return OutputCheck.notChecked("the model has no multi-array output named \(e.name)")
                }
                got.append(MLShapedArray<Float>(converting: array).scalars)
                want.append(try OutputCheck.readFloats(payload.appendingPathComponent(e.path), count: e.count))
            }
            return try OutputCheck.compare(got, want, gate: check.gate, runtime: runtime, sets: check.sets)
        } catch {
            return OutputCheck.notChecked("the check prediction failed: \(error.localizedDescription)")
        }
    }

    /// A staged raw little-endian input file as an MLMultiArray of its dtype (float32, float16, float64, int32).
    static func rawArray(_ t: TensorFile, _ url: URL) throws -> MLMultiArray {
        let types: [String: (MLMultiArrayDataType, Int)] = ["float32": (.float32, 4), "float16": (.float16, 2),
                                                            "float64": (.double, 8), "int32": (.int32, 4)]
        guard let (type, size) = types[t.dtype] else {
            throw BenchError.unsupportedInput("input \(t.name) is \(t.dtype): the check feeds float32/16/64 and int32")
        }
        let data = try Data(contentsOf: url)
        guard data.count == t.count * size else {
            throw BenchError.failed("\(url.lastPathComponent): \(data.count) bytes, expected \(t.count * size)")
        }
        let array = try MLMultiArray(shape: t.shape.map { NSNumber(value: $0) }, dataType: type)
        data.withUnsafeBytes { raw in array.dataPointer.copyMemory(from: raw.baseAddress!, byteCount: data.count) }
        return array
    }
}

public enum BenchRunner {
    /// Every component of the plan on every compute unit; the report lists one entry per (component, unit).
    public static func run(plan: Plan, payload: URL, log: (String) -> Void = { print($0) }) async -> [String: Any] {
        let before = conditions()
        var comps: [ComponentData] = []
        for c in plan.components {
            let url = payload.appendingPathComponent(c.file)
            var artifact = c.artifact
            artifact["file"] = c.file
            artifact["format"] = url.pathExtension
            artifact["device_path"] = url.path
            var compiled = url
            var compileMs: Double? = nil
            if url.pathExtension != "mlmodelc" {
                do {
                    log("\(c.component): compiling \(c.file) on the device")
                    let result = try await CoreMLBench.compile(url)
                    compiled = result.0
                    compileMs = result.1
                } catch {
                    for unit in plan.computeUnits {
                        comps.append(ComponentData(component: c.component, status: "failed",
                                                   error: "compileModel failed: \(error.localizedDescription)",
                                                   artifact: artifact,
                                                   runtime: ["name": "coreml", "runner": runnerName, "backend": unit],
                                                   runs: []))
                    }
                    continue
                }
            }
            for unit in plan.computeUnits {
                log("\(c.component) on \(unit): \(plan.warmup) warm-up + \(plan.iterations) timed predictions")
                comps.append(CoreMLBench.measure(component: c.component, compiledURL: compiled, compileMs: compileMs,
                                                 unit: unit, warmup: plan.warmup, iterations: plan.iterations,
                                                 artifact: artifact, check: c.check, payload: payload))
            }
            if compiled != url { try? FileManager.default.removeItem(at: compiled) }
        }
        let after = conditions()
        var warnings: [String] = []
        if let b = before["thermal_state"] as? Int, let a = after["thermal_state"] as? Int, a > b {
            warnings.append("thermal state rose from \(b) to \(a) during the run")
        }
        if after["low_power_mode"] as? Bool == true { warnings.append("Low Power Mode was on") }
        let proto: [String: Any] = ["warmup": plan.warmup, "iterations": plan.iterations, "runs": 1,
                                    "timed_region": "MLModel.prediction", "mode": "app", "runner": runnerName,
                                    "compute_units": plan.computeUnits]
        let tool: [String: Any] = ["name": "mi2v-ios-xctest", "version": "0.1.0"]
        return Report.build(device: device(), protocolInfo: proto, conditions: ["before": before, "after": after],
                            frames: plan.frames, components: comps, warnings: warnings, tool: tool)
    }

    static func conditions() -> [String: Any] {
        // thermal_state: 0 nominal, 1 fair, 2 serious, 3 critical (ProcessInfo.ThermalState)
        ["time_utc": Report.utcNow(), "thermal_state": ProcessInfo.processInfo.thermalState.rawValue,
         "low_power_mode": ProcessInfo.processInfo.isLowPowerModeEnabled]
    }

    static func machine() -> String {
        var u = utsname()
        uname(&u)
        return withUnsafePointer(to: &u.machine) { pointer in
            pointer.withMemoryRebound(to: CChar.self, capacity: MemoryLayout.size(ofValue: u.machine)) {
                String(cString: $0)
            }
        }
    }

    static func device() -> [String: Any] {
        let info = ProcessInfo.processInfo
        let simulatorModel = info.environment["SIMULATOR_MODEL_IDENTIFIER"]
        #if os(iOS)
        let os = "ios"
        #else
        let os = "macos"
        #endif
        let v = info.operatingSystemVersion
        return ["transport": "xcodebuild", "simulated_device": simulatorModel != nil,
                "model": simulatorModel ?? machine(), "os": os,
                "os_version": "\(v.majorVersion).\(v.minorVersion).\(v.patchVersion)",
                "os_build": info.operatingSystemVersionString, "mem_total_kb": Int(info.physicalMemory / 1024),
                "cores": info.processorCount]
    }
}
#endif
