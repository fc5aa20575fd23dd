// Platform-free part of the iOS app (Foundation only): a tiled stage's chunks in time (tiling record format 3). The
// Swift copy of apps/android/app/src/main/kotlin/org/mi2v/bench/ChunkLoop.kt, which is the host's own loop line for
// line: mi2v_export/chunking.py (fine_frames, time_from_record, _owned, run_chunked). The Kotlin copy is tested with
// the host as its oracle (tests/e2e/test_app_tile_loop.py); this one has NOT been compiled or run (no Swift
// toolchain where it was written): keep the two in step, function for function.
import Foundation

/// A stage's `time` record (chunking.TimePlan.record).
public struct TimePlanRecord {
    public let frames: Int
    public let tile: Int
    public let window: Int
    public let halo: Int
    public let scaleIn: Int
    public let scaleOut: Int
    public let field: Int
    public let unitFrames: Int
}

/// chunking.TimePlan: the axis in units and frames per unit on each side.
public struct TimePlan {
    public let axis: AxisPlan
    public let scaleIn: Int
    public let scaleOut: Int

    public var framesIn: Int { ChunkLoop.fineFrames(axis.window, scaleIn) }
    public var framesOut: Int { ChunkLoop.fineFrames(axis.window, scaleOut) }
}

public enum ChunkLoop {
    /// chunking.fine_frames: frames on a side of `scale` frames per unit, for `units` units.
    public static func fineFrames(_ units: Int, _ scale: Int) -> Int { scale * (units - 1) + 1 }

    /// A stage's `time` record from JSONSerialization's values.
    public static func parse(_ m: [String: Any]) throws -> TimePlanRecord {
        func int(_ key: String) throws -> Int {
            guard let n = m[key] as? NSNumber else {
                throw TileLoopError.invalid("tiling record: time has no number '\(key)'")
            }
            return n.intValue
        }
        return try TimePlanRecord(frames: int("frames"), tile: int("tile"), window: int("window"),
                                  halo: int("halo"), scaleIn: int("scale_in"), scaleOut: int("scale_out"),
                                  field: int("field"), unitFrames: int("unit_frames"))
    }

    /// chunking.time_from_record: the plan for an input of `tIn` frames; an error when the clip is not the one the
    /// tile model was exported for.
    public static func fromRecord(_ record: TimePlanRecord, _ tIn: Int) throws -> TimePlan {
        let expected = fineFrames(record.frames, record.scaleIn)
        guard expected == tIn else {
            throw TileLoopError.invalid("the tiled artifact was chunked in time for \(expected) input frames, not " +
                                        "\(tIn): export it again for this clip length")
        }
        let axis = try TileLoop.planAxis(record.frames, record.tile, record.halo)
        guard axis.window == record.window && axis.count > 1 else {
            throw TileLoopError.invalid("the tiled artifact's time window \(record.window) does not match its own " +
                                        "plan")
        }
        return TimePlan(axis: axis, scaleIn: record.scaleIn, scaleOut: record.scaleOut)
    }

    /// The frames of a (…, T, H, W) tensor.
    public static func frames(_ x: FloatTensor) throws -> Int {
        guard x.shape.count >= 3 else {
            throw TileLoopError.invalid("a time-chunked tensor needs a time axis, got \(x.shape)")
        }
        return x.shape[x.shape.count - 3]
    }

    /// x[..., start:start + n, :, :] as a new contiguous tensor.
    public static func slice(_ x: FloatTensor, _ start: Int, _ n: Int) throws -> FloatTensor {
        let t = try frames(x)
        let plane = x.rows * x.cols
        let outer = FloatTensor.product(Array(x.shape[0..<(x.shape.count - 3)]))
        var out = [Float](repeating: 0, count: outer * n * plane)
        for o in 0..<outer {
            let src = (o * t + start) * plane
            out.replaceSubrange((o * n * plane)..<((o + 1) * n * plane), with: x.data[src..<(src + n * plane)])
        }
        var shape = x.shape
        shape[shape.count - 3] = n
        return try FloatTensor(data: out, shape: shape)
    }

    /// chunking._owned: the first output frame unit `unit` owns (the clip's end for the unit past the last).
    static func owned(_ unit: Int, _ scale: Int, _ total: Int) -> Int { min(scale * unit, total) }

    /// chunking.run_chunked: `run` on every time window of `x`, each window's core frames copied into the whole
    /// clip's output.
    public static func runChunked(_ run: (FloatTensor) throws -> FloatTensor, _ x: FloatTensor,
                                  _ plan: TimePlan) throws -> FloatTensor {
        let a = plan.axis
        let total = fineFrames(a.frame, plan.scaleOut)
        var out: [Float] = []
        var shape: [Int]? = nil
        for k in 0..<a.count {
            let y = try run(slice(x, a.windows[k] * plan.scaleIn, plan.framesIn))
            guard try frames(y) == plan.framesOut else {
                throw TileLoopError.invalid("a time window gave \(try frames(y)) frames, its plan says " +
                                            "\(plan.framesOut)")
            }
            var whole = y.shape
            whole[whole.count - 3] = total
            if let s = shape {
                guard s == whole else {
                    throw TileLoopError.invalid("time window output \(y.shape) does not match the first one's")
                }
            } else {
                shape = whole
                out = [Float](repeating: 0, count: FloatTensor.product(whole))
            }
            let core = a.core(k)
            let c0 = owned(core[0], plan.scaleOut, total)
            let c1 = owned(core[1], plan.scaleOut, total)
            let o = a.windows[k] * plan.scaleOut
            let plane = y.rows * y.cols
            let outer = FloatTensor.product(Array(y.shape[0..<(y.shape.count - 3)]))
            for p in 0..<outer {
                let src = (p * plan.framesOut + c0 - o) * plane
                let dst = (p * total + c0) * plane
                let n = (c1 - c0) * plane
                out.replaceSubrange(dst..<(dst + n), with: y.data[src..<(src + n)])
            }
        }
        return try FloatTensor(data: out, shape: shape!)
    }
}
