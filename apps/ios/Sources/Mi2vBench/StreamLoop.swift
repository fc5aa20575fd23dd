// Platform-free part of the iOS app (Foundation only): row streaming of a tiling record's `stream` group (format 2).
// The Swift copy of apps/android/app/src/main/kotlin/org/mi2v/bench/StreamLoop.kt, which is the host's own loop line
// for line: mi2v_export/streaming.py (_Source, _Rows, run_streamed). A group's steps run on full-width row bands as
// a wavefront: a band asks the step before for the rows it needs, and rows no later band reads are dropped. The
// Kotlin copy is tested with the host as its oracle (tests/e2e/test_app_tile_loop.py); this one has NOT been
// compiled or run (no Swift toolchain where it was written): keep the two in step, function for function.
import Foundation

/// Rows of a step's input: `take` returns rows [lo, hi) (clamped to what exists, as a numpy slice is); rows before
/// `release(before)` are no longer needed.
protocol RowSource: AnyObject {
    func take(_ lo: Int, _ hi: Int) throws -> FloatTensor
    func release(_ before: Int)
}

/// streaming._Source: the group's input, kept whole (small by construction: the stage's own input).
final class WholeInput: RowSource {
    let x: FloatTensor

    init(_ x: FloatTensor) { self.x = x }

    func take(_ lo: Int, _ hi: Int) throws -> FloatTensor {
        try TileLoop.crop(x, [min(lo, x.rows), min(hi, x.rows)], [0, x.cols])
    }

    func release(_ before: Int) {}
}

/// streaming._Rows: one step's output rows as its bands produce them, in order.
final class StepRows: RowSource {
    let run: (FloatTensor) throws -> FloatTensor
    let rows: AxisPlan
    let sIn: Int
    let sOut: Int
    let up: RowSource
    var next = 0                              // the next band to run
    var chunks: [(Int, FloatTensor)] = []     // (first row, rows) produced and still needed
    var end = 0                               // output rows produced so far

    init(_ run: @escaping (FloatTensor) throws -> FloatTensor, _ plan: StagePlan, _ up: RowSource) throws {
        if plan.grid.cols.count != 1 {
            throw TileLoopError.invalid("a streamed step runs on full-width row bands; its plan splits the columns")
        }
        self.run = run
        self.rows = plan.grid.rows
        self.sIn = plan.scaleIn
        self.sOut = plan.scaleOut
        self.up = up
    }

    var finished: Bool { next == rows.count }

    /// Run the next band: its first output row and its core rows; input rows no later band reads are released.
    func band() throws -> (Int, FloatTensor) {
        let i = next
        let lo = rows.windows[i] * sIn
        let y = try run(up.take(lo, lo + rows.window * sIn))
        next += 1
        up.release(next < rows.count ? rows.windows[next] * sIn : Int.max)
        if rows.count == 1 { return (0, y) }
        let core = rows.core(i)
        let w = rows.windows[i]
        let r = [min((core[0] - w) * sOut, y.rows), min((core[1] - w) * sOut, y.rows)]
        return (core[0] * sOut, try TileLoop.crop(y, r, [0, y.cols]))
    }

    func take(_ lo: Int, _ hi: Int) throws -> FloatTensor {
        while end < hi && !finished {
            let produced = try band()
            chunks.append(produced)
            end = produced.0 + produced.1.rows
        }
        var parts: [FloatTensor] = []
        for (s, part) in chunks where s < hi && s + part.rows > lo {
            parts.append(try TileLoop.crop(part, [max(lo - s, 0), min(hi - s, part.rows)], [0, part.cols]))
        }
        return parts.count == 1 ? parts[0] : try StreamLoop.concatRows(parts)
    }

    func release(_ before: Int) {
        chunks.removeAll { $0.0 + $0.1.rows <= before }
    }
}

public enum StreamLoop {
    /// streaming.run_streamed: the chain of `runs` (step k's band model, planned by `plans[k]`) on `x`; the last
    /// step's whole output.
    public static func runStreamed(_ runs: [(FloatTensor) throws -> FloatTensor], _ x: FloatTensor,
                                   _ plans: [StagePlan]) throws -> FloatTensor {
        if runs.isEmpty || runs.count != plans.count {
            throw TileLoopError.invalid("a streamed stage needs one plan per step")
        }
        var upstream: RowSource = WholeInput(x)
        for k in runs.indices { upstream = try StepRows(runs[k], plans[k], upstream) }
        let last = upstream as! StepRows
        var out: [Float]? = nil
        var shape: [Int] = []
        while !last.finished {
            let (start, rows) = try last.band()
            if out == nil {
                if last.rows.count == 1 { return rows }
                shape = rows.lead + [last.rows.frame * last.sOut, rows.cols]
                out = [Float](repeating: 0, count: FloatTensor.product(shape))
            }
            let height = shape[shape.count - 2]
            let plane = rows.rows * rows.cols
            for p in 0..<rows.planes {
                let dst = (p * height + start) * rows.cols
                out![dst..<(dst + plane)] = rows.data[(p * plane)..<((p + 1) * plane)]
            }
        }
        return try FloatTensor(data: out!, shape: shape)
    }

    /// np.concatenate(parts, axis=-2): tensors with the same leading axes and columns, stacked along rows.
    static func concatRows(_ parts: [FloatTensor]) throws -> FloatTensor {
        let first = parts[0]
        let height = parts.reduce(0) { $0 + $1.rows }
        var out = [Float](repeating: 0, count: first.planes * height * first.cols)
        var at = 0
        for part in parts {
            guard part.lead == first.lead && part.cols == first.cols else {
                throw TileLoopError.invalid("bands of different shapes")
            }
            let plane = part.rows * part.cols
            for p in 0..<part.planes {
                let dst = (p * height + at) * part.cols
                out[dst..<(dst + plane)] = part.data[(p * plane)..<((p + 1) * plane)]
            }
            at += part.rows
        }
        return try FloatTensor(data: out, shape: first.lead + [height, first.cols])
    }

    /// sessions.stream_groups: stage indices grouped as they run, consecutive stages of one `stream` group
    /// together, any other alone.
    public static func groups(_ stages: [TiledStage]) -> [[Int]] {
        var groups: [[Int]] = []
        for k in stages.indices {
            if let group = stages[k].stream, let previous = groups.last,
               stages[previous[0]].stream == group {
                groups[groups.count - 1].append(k)
            } else {
                groups.append([k])
            }
        }
        return groups
    }

    /// sessions.group_plans: each stage's plan for a group whose first stage reads `inRows` × `inCols`; a streamed
    /// stage reads its predecessor's whole output (a one-window axis keeps the tile model's own size).
    public static func plans(_ stages: [TiledStage], _ inRows: Int, _ inCols: Int) throws -> [StagePlan] {
        var plans: [StagePlan] = []
        var hw = [inRows, inCols]
        for stage in stages {
            let plan = try TileLoop.stageFromRecord(stage.plan, hw[0], hw[1])
            plans.append(plan)
            let out = stage.outputWindow
            let axes = [plan.grid.rows, plan.grid.cols]
            hw = (0..<2).map { axes[$0].count == 1 ? out[out.count - 2 + $0] : axes[$0].frame * plan.scaleOut }
        }
        return plans
    }
}
