// Platform-free part of the iOS app (Foundation only): the tile loop of a tiled encoder / decoder. The Swift copy of
// apps/android/app/src/main/kotlin/org/mi2v/bench/TileLoop.kt, which is the host's own loop line for line:
// mi2v_export/tiling.py (plan_axis, stage_from_record, _ramp, run_tiled, _copy_core, _core_slices, _core, _span)
// and mi2v_export/runtimes/sessions.py (TiledSession.execute: the stages in order, each window by window, stitched;
// the output of stage k is the input of stage k + 1; a `stream` group through StreamLoop.swift; a stage chunked in
// time through ChunkLoop.swift, as sessions.run_stage does). The Kotlin copy is tested with the host as its oracle
// (tests/e2e/test_app_tile_loop.py); this one has NOT been compiled or run (no Swift toolchain where it was
// written): keep the two in step, function for function.
import Foundation

public enum TileLoopError: Error, CustomStringConvertible {
    case invalid(String)

    public var description: String {
        switch self {
        case .invalid(let why): return why
        }
    }
}

/// A float32 tensor: row-major values and their shape, whose last two axes are spatial (rows, columns).
public struct FloatTensor {
    public let data: [Float]
    public let shape: [Int]

    public init(data: [Float], shape: [Int]) throws {
        guard shape.count >= 2 else {
            throw TileLoopError.invalid("a tiled tensor needs two spatial axes, got shape \(shape)")
        }
        guard FloatTensor.product(shape) == data.count else {
            throw TileLoopError.invalid("\(data.count) values do not fill shape \(shape)")
        }
        self.data = data
        self.shape = shape
    }

    public var rows: Int { shape[shape.count - 2] }
    public var cols: Int { shape[shape.count - 1] }

    /// The leading (non-spatial) axes.
    public var lead: [Int] { Array(shape[0..<(shape.count - 2)]) }

    /// How many rows × cols planes the leading axes hold.
    public var planes: Int { FloatTensor.product(lead) }

    public static func product(_ dims: [Int]) -> Int { dims.reduce(1, *) }
}

/// One spatial axis (tiling.AxisPlan): the frame, the core of each tile, the window the tile model sees (all in grid
/// units), the core starts and the window starts (clamped inside the frame).
public struct AxisPlan {
    public let frame: Int
    public let tile: Int
    public let window: Int
    public let halo: Int
    public let starts: [Int]
    public let windows: [Int]

    public var count: Int { starts.count }

    /// [start, end) of core `index` (tiling._core).
    public func core(_ index: Int) -> [Int] { [starts[index], min(starts[index] + tile, frame)] }
}

/// The 2-D grid (tiling.TileGrid): rows × columns of windows and the receptive field that decides exactness.
public struct TileGrid {
    public let rows: AxisPlan
    public let cols: AxisPlan
    public let receptiveField: Int

    public var count: Int { rows.count * cols.count }

    /// True when every core is at least one receptive field from any window border inside the frame.
    public var exact: Bool {
        TileGrid.coreCovered(rows, receptiveField) && TileGrid.coreCovered(cols, receptiveField)
    }

    private static func coreCovered(_ axis: AxisPlan, _ field: Int) -> Bool {
        for k in 0..<axis.count {
            let start = axis.starts[k]
            let win = axis.windows[k]
            let end = min(start + axis.tile, axis.frame)
            if start - win < field && win > 0 { return false }
            if win + axis.window - end < field && win + axis.window < axis.frame { return false }
        }
        return true
    }
}

/// A stage's plan record as the manifest's tiling record holds it (tiling.StagePlan.record): [rows, cols] pairs,
/// `unitPx` nil for an axis that is not a whole number of units, `whole` nil when the record has none.
public struct StagePlanRecord {
    public let scaleIn: Int
    public let scaleOut: Int
    public let unitPx: [Int?]
    public let whole: [Bool]?
    public let frame: [Int]
    public let tile: [Int]
    public let window: [Int]
    public let halo: [Int]
    public let grid: [Int]
    public let receptiveField: Int
    public let exact: Bool
}

/// One entry of the tiling record's `stages`: its model file, its tile model's input / output shapes, its plan, and
/// its `stream` group (format 2; nil when the stage runs on its own windows).
public struct TiledStage {
    public let file: String
    public let inputWindow: [Int]
    public let outputWindow: [Int]
    public let plan: StagePlanRecord
    public var stream: Int? = nil
    public var time: TimePlanRecord? = nil
}

/// A manifest entry's `tiling` record: the stages in order; `residency` "stage" (one stage model loaded at a time)
/// or "all" (every stage model kept loaded).
public struct TilingRecord {
    public let format: Int
    public let residency: String
    public let stages: [TiledStage]
}

/// A stage's plan for one input (tiling.StagePlan, less `unit_px`, which the loop does not read).
public struct StagePlan {
    public let grid: TileGrid
    public let scaleIn: Int
    public let scaleOut: Int
}

/// Builds the records above from JSONSerialization's values (objects, arrays, NSNumber).
public enum TilingJSON {
    public static let tilingFormat = 1    // sessions.TILING_FORMAT
    public static let streamedFormat = 2  // sessions.STREAMED_FORMAT: stages with a `stream` group (StreamLoop.swift)
    public static let timedFormat = 3     // sessions.TIMED_FORMAT: stages with a `time` plan (ChunkLoop.swift)
    public static let formats = [tilingFormat, streamedFormat, timedFormat]  // sessions.FORMATS: later ones refused
    public static let residencies = ["stage", "all"]

    /// The entry's `tiling` record (sessions.check_record's checks that need only the record).
    public static func parse(_ record: [String: Any]) throws -> TilingRecord {
        let format = (record["format"] as? NSNumber)?.intValue
        guard let fmt = format, formats.contains(fmt) else {
            throw TileLoopError.invalid("tiling record format \(format.map { String($0) } ?? "null") is not " +
                                        "supported (this app runs formats \(formats.map { String($0) }" +
                                        ".joined(separator: ", "))); update the app")
        }
        guard let list = record["stages"] as? [Any], !list.isEmpty else {
            throw TileLoopError.invalid("the tiling record lists no stages")
        }
        let residency = record["residency"] as? String ?? "all"
        guard residencies.contains(residency) else {
            throw TileLoopError.invalid("tiling record residency '\(residency)' is not supported " +
                                        "(this app runs \(residencies.joined(separator: ", "))); update the app")
        }
        var stages: [TiledStage] = []
        for item in list {
            guard let s = item as? [String: Any] else {
                throw TileLoopError.invalid("tiling record: a stage is not an object")
            }
            guard let p = s["plan"] as? [String: Any] else {
                throw TileLoopError.invalid("tiling record: a stage has no plan")
            }
            guard let file = s["file"] as? String else {
                throw TileLoopError.invalid("tiling record: a stage has no file")
            }
            if s["stream"] != nil && !(s["stream"] is NSNumber) {
                throw TileLoopError.invalid("tiling record: a bad stream group")
            }
            if s["time"] != nil && !(s["time"] is [String: Any]) {
                throw TileLoopError.invalid("tiling record: a bad time plan")
            }
            let time = try (s["time"] as? [String: Any]).map { try ChunkLoop.parse($0) }
            try stages.append(TiledStage(file: file, inputWindow: ints(s, "input_window"),
                                         outputWindow: ints(s, "output_window"), plan: plan(p),
                                         stream: (s["stream"] as? NSNumber)?.intValue, time: time))
        }
        if fmt != timedFormat && stages.contains(where: { $0.time != nil }) {
            throw TileLoopError.invalid("the tiling record chunks stages in time but says format \(fmt) (time " +
                                        "chunks are format \(timedFormat))")
        }
        if fmt != streamedFormat && stages.contains(where: { $0.stream != nil }) {
            throw TileLoopError.invalid("the tiling record streams stages but says format \(fmt) (streamed " +
                                        "stages are format \(streamedFormat))")
        }
        return TilingRecord(format: fmt, residency: residency, stages: stages)
    }

    /// One stage's plan record.
    public static func plan(_ m: [String: Any]) throws -> StagePlanRecord {
        let unit = try list(m, "unit_px").map { ($0 as? NSNumber)?.intValue }
        let whole = (m["whole"] as? [Any]).map { raw in raw.map { ($0 as? Bool) == true } }
        return try StagePlanRecord(scaleIn: int(m, "scale_in"), scaleOut: int(m, "scale_out"), unitPx: unit,
                                   whole: whole, frame: ints(m, "frame"), tile: ints(m, "tile"),
                                   window: ints(m, "window"), halo: ints(m, "halo"), grid: ints(m, "grid"),
                                   receptiveField: int(m, "receptive_field"), exact: (m["exact"] as? Bool) == true)
    }

    private static func list(_ m: [String: Any], _ key: String) throws -> [Any] {
        guard let items = m[key] as? [Any] else { throw TileLoopError.invalid("tiling record: no list '\(key)'") }
        return items
    }

    private static func int(_ m: [String: Any], _ key: String) throws -> Int {
        guard let n = m[key] as? NSNumber else { throw TileLoopError.invalid("tiling record: no number '\(key)'") }
        return n.intValue
    }

    private static func ints(_ m: [String: Any], _ key: String) throws -> [Int] {
        return try list(m, key).map { (value: Any) throws -> Int in
            guard let n = value as? NSNumber else {
                throw TileLoopError.invalid("tiling record: '\(key)' holds a non-number")
            }
            return n.intValue
        }
    }
}

/// What runs a tiled component's stage models; `runStages` calls it in this order per stage k: `open(k)`, then
/// `run(k, index, window)` for each window (row by row), then `close(k)` (also when a run throws). A streamed group
/// opens all its stages first, runs their bands interleaved (each stage's numbered in its own order) and then closes
/// them. With residency "stage" open loads stage k's model and close releases it; with "all" close may keep it.
public protocol StageRunner: AnyObject {
    func open(stage: Int, record: TiledStage) throws

    /// Stage `stage`'s model on window `index` (its input window shape), returning the output window.
    func run(stage: Int, index: Int, window: FloatTensor) throws -> FloatTensor

    func close(stage: Int)
}

public extension StageRunner {
    func open(stage: Int, record: TiledStage) throws {}
    func close(stage: Int) {}
}

/// One stage's per-window run times (ms), shared by the closure that runs its windows.
final class TimeLog {
    var ms: [Double] = []
}

/// What one call of a tiled component did: the stitched output and each stage's per-window run times (ms).
public struct TiledRun {
    public let output: FloatTensor
    public let tileMs: [[Double]]
}

public enum TileLoop {
    /// tiling.plan_axis: cores of `tile` partition [0, frame) (the last one may be shorter); each window is the
    /// core ± halo, shifted inside the frame. A tile as large as the frame gives one window, the whole axis.
    public static func planAxis(_ frame: Int, _ tile: Int, _ halo: Int) throws -> AxisPlan {
        if tile <= 0 || halo < 0 { throw TileLoopError.invalid("tile \(tile) and halo \(halo) must be positive") }
        if tile + 2 * halo >= frame {
            return AxisPlan(frame: frame, tile: frame, window: frame, halo: 0, starts: [0], windows: [0])
        }
        let window = tile + 2 * halo
        let count = (frame + tile - 1) / tile
        let starts = (0..<count).map { $0 * tile }
        let windows = (0..<count).map { min(max(starts[$0] - halo, 0), frame - window) }
        return AxisPlan(frame: frame, tile: tile, window: window, halo: halo, starts: starts, windows: windows)
    }

    /// tiling.stage_from_record: a stage's plan for an input of `inRows` × `inCols` pixels; throws when that frame
    /// is not the one the (fixed-size) tile model was exported for.
    public static func stageFromRecord(_ record: StagePlanRecord, _ inRows: Int, _ inCols: Int) throws -> StagePlan {
        let inHw = [inRows, inCols]
        let whole = (record.whole != nil && !record.whole!.isEmpty) ? record.whole!
            : [inRows % record.scaleIn == 0, inCols % record.scaleIn == 0]
        let got = (0..<2).map { whole[$0] ? inHw[$0] / record.scaleIn : inHw[$0] }
        if got != record.frame {
            throw TileLoopError.invalid("the tiled artifact was exported for a stage frame of \(record.frame) " +
                                        "units, not \(got): export it again for this resolution")
        }
        let grid = try TileGrid(rows: planAxis(record.frame[0], record.tile[0], record.halo[0]),
                                cols: planAxis(record.frame[1], record.tile[1], record.halo[1]),
                                receptiveField: record.receptiveField)
        if grid.rows.window != record.window[0] || grid.cols.window != record.window[1] {
            throw TileLoopError.invalid("the tiled artifact's window \(record.window) does not match its own plan")
        }
        return StagePlan(grid: grid, scaleIn: record.scaleIn, scaleOut: record.scaleOut)
    }

    /// sessions.TiledSession.execute: every stage over its windows, in order, each stage's input its predecessor's
    /// stitched output (only that one is kept); a streamed group's stages band by band together (StreamLoop.swift),
    /// all open while it runs. `onStage(k, output)` sees each whole output (a streamed group's last stage's only).
    /// Each window's `runner.run` is timed.
    public static func runStages(_ record: TilingRecord, _ x: FloatTensor, runner: StageRunner,
                                 onStage: ((Int, FloatTensor) throws -> Void)? = nil) throws -> TiledRun {
        var current = x
        let times = record.stages.map { _ in TimeLog() }
        for group in StreamLoop.groups(record.stages) {
            var opened: [Int] = []
            defer { for k in opened { runner.close(stage: k) } }
            for k in group {
                try runner.open(stage: k, record: record.stages[k])
                opened.append(k)
            }
            let runs = group.map { k in timedRun(runner, k, times[k]) }
            let plans = try StreamLoop.plans(group.map { record.stages[$0] }, current.rows, current.cols)
            if record.stages[group[0]].stream != nil {
                current = try StreamLoop.runStreamed(runs, current, plans)
            } else {
                current = try runStage(runs[0], current, record.stages[group[0]], plans[0])
            }
            try onStage?(group[group.count - 1], current)
        }
        return TiledRun(output: current, tileMs: times.map { $0.ms })
    }

    /// sessions.run_stage: one (not streamed) stage over the whole input: its time windows (ChunkLoop.swift) where
    /// it has a `time` plan, each over its spatial windows.
    public static func runStage(_ run: @escaping (FloatTensor) throws -> FloatTensor, _ x: FloatTensor,
                                _ stage: TiledStage, _ plan: StagePlan) throws -> FloatTensor {
        let spatial = { (w: FloatTensor) throws -> FloatTensor in
            try runTiled(run, w, grid: plan.grid, scaleIn: plan.scaleIn, scaleOut: plan.scaleOut)
        }
        guard let time = stage.time else { return try spatial(x) }
        return try ChunkLoop.runChunked(spatial, x, ChunkLoop.fromRecord(time, ChunkLoop.frames(x)))
    }

    /// Stage k's windows through `runner.run`, numbered in the order they run, each one's time added to `log`.
    static func timedRun(_ runner: StageRunner, _ k: Int, _ log: TimeLog) -> (FloatTensor) throws -> FloatTensor {
        var index = 0
        return { w in
            let t0 = DispatchTime.now().uptimeNanoseconds
            let y = try runner.run(stage: k, index: index, window: w)
            log.ms.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
            index += 1
            return y
        }
    }

    /// tiling.run_tiled: `run` on every window of `x` (`scaleIn` array pixels per grid unit), its outputs
    /// (`scaleOut` pixels per unit) stitched: cores copied when the grid is exact, blended otherwise.
    /// `onTile(index, count)` after each window.
    public static func runTiled(_ run: (FloatTensor) throws -> FloatTensor, _ x: FloatTensor, grid: TileGrid,
                                scaleIn: Int, scaleOut: Int,
                                onTile: ((Int, Int) -> Void)? = nil) throws -> FloatTensor {
        let rows = grid.rows
        let cols = grid.cols
        if grid.count == 1 {
            let y = try run(x)
            onTile?(0, 1)
            return y
        }
        var stitch: Stitch? = nil
        for i in 0..<rows.count {
            for j in 0..<cols.count {
                let y0 = rows.windows[i]
                let x0 = cols.windows[j]
                let window = try crop(x, span(y0, rows.window, scaleIn, x.rows), span(x0, cols.window, scaleIn, x.cols))
                let y = try run(window)
                let s = stitch ?? Stitch(grid: grid, scaleOut: scaleOut, first: y)
                stitch = s
                try s.add(y, i, j)
                onTile?(i * cols.count + j, grid.count)
            }
        }
        return try stitch!.finish()
    }

    /// tiling._ramp: blend weights along one axis of a window's output, linear over the halo at borders inside the
    /// frame.
    public static func ramp(_ axis: AxisPlan, _ index: Int, _ sizeOut: Int, _ scaleOut: Int) -> [Double] {
        var weights = [Double](repeating: 1.0, count: sizeOut)
        let fade = 2 * axis.halo * scaleOut
        if fade == 0 { return weights }
        let ramp = (0..<fade).map { (Double($0) + 0.5) / Double(fade) }
        if axis.windows[index] > 0 {
            for k in 0..<fade { weights[k] = ramp[k] }
        }
        if axis.windows[index] + axis.window < axis.frame {
            for k in 0..<fade {
                let at = sizeOut - fade + k
                weights[at] = min(weights[at], ramp[fade - 1 - k])
            }
        }
        return weights
    }

    /// tiling._span, clamped to the axis' `dim` as a numpy slice is: [start·scale, (start + size)·scale).
    public static func span(_ start: Int, _ size: Int, _ scale: Int, _ dim: Int) -> [Int] {
        [min(start * scale, dim), min((start + size) * scale, dim)]
    }

    /// tiling._core_slices: (destination, source) ranges of a window's core along one axis; a single window is
    /// copied whole (`outSize` and `ySize` are the axis' sizes in the output and in the window's output).
    public static func coreSlices(_ axis: AxisPlan, _ index: Int, _ s: Int, _ outSize: Int, _ ySize: Int) -> [[Int]] {
        if axis.count == 1 { return [[0, outSize], [0, ySize]] }
        let core = axis.core(index)
        let w = axis.windows[index]
        return [[min(core[0] * s, outSize), min(core[1] * s, outSize)],
                [min((core[0] - w) * s, ySize), min((core[1] - w) * s, ySize)]]
    }

    /// x[..., rows[0]:rows[1], cols[0]:cols[1]] as a new contiguous tensor.
    public static func crop(_ x: FloatTensor, _ rows: [Int], _ cols: [Int]) throws -> FloatTensor {
        let h = rows[1] - rows[0]
        let w = cols[1] - cols[0]
        var out: [Float] = []
        out.reserveCapacity(x.planes * h * w)
        for p in 0..<x.planes {
            for r in 0..<h {
                let start = (p * x.rows + rows[0] + r) * x.cols + cols[0]
                out.append(contentsOf: x.data[start..<(start + w)])
            }
        }
        return try FloatTensor(data: out, shape: x.lead + [h, w])
    }
}

/// The stitched output of one stage (run_tiled's `out` / `acc`), shaped by its first window's output: the leading
/// axes of that output, and per spatial axis its size when the axis is one window, else frame × scaleOut.
/// Exact: cores copied as float32 (tiling._copy_core). Blended: each window's output × its outer ramp weights summed
/// in float64, the weights summed alike, divided at the end and rounded to float32.
private final class Stitch {
    let grid: TileGrid
    let scaleOut: Int
    let lead: [Int]
    let planes: Int
    let rows: Int
    let cols: Int
    let exact: Bool
    var out: [Float]     // exact only
    var sum: [Double]    // blended only
    var acc: [Double]    // blended only

    init(grid: TileGrid, scaleOut: Int, first: FloatTensor) {
        let rows = grid.rows.count == 1 ? first.rows : grid.rows.frame * scaleOut
        let cols = grid.cols.count == 1 ? first.cols : grid.cols.frame * scaleOut
        let exact = grid.exact
        self.grid = grid
        self.scaleOut = scaleOut
        self.lead = first.lead
        self.planes = first.planes
        self.rows = rows
        self.cols = cols
        self.exact = exact
        self.out = exact ? [Float](repeating: 0, count: first.planes * rows * cols) : []
        self.sum = exact ? [] : [Double](repeating: 0, count: first.planes * rows * cols)
        self.acc = exact ? [] : [Double](repeating: 0, count: rows * cols)
    }

    func add(_ y: FloatTensor, _ i: Int, _ j: Int) throws {
        if y.lead != lead {
            throw TileLoopError.invalid("window output \(y.shape) does not match the first one's leading axes \(lead)")
        }
        if exact { try copyCore(y, i, j) } else { try blend(y, i, j) }
    }

    /// tiling._copy_core: out[..., dr, dc] = y[..., sr, sc].
    private func copyCore(_ y: FloatTensor, _ i: Int, _ j: Int) throws {
        let r = TileLoop.coreSlices(grid.rows, i, scaleOut, rows, y.rows)
        let c = TileLoop.coreSlices(grid.cols, j, scaleOut, cols, y.cols)
        let h = try sameLength(r[0], r[1], "rows")
        let w = try sameLength(c[0], c[1], "columns")
        for p in 0..<planes {
            for k in 0..<h {
                let src = (p * y.rows + r[1][0] + k) * y.cols + c[1][0]
                let dst = (p * rows + r[0][0] + k) * cols + c[0][0]
                out.replaceSubrange(dst..<(dst + w), with: y.data[src..<(src + w)])
            }
        }
    }

    /// run_tiled's blend: out[..., ys, xs] += y · outer(ramp_rows, ramp_cols); acc[ys, xs] += the weights.
    private func blend(_ y: FloatTensor, _ i: Int, _ j: Int) throws {
        let wr = TileLoop.ramp(grid.rows, i, y.rows, scaleOut)
        let wc = TileLoop.ramp(grid.cols, j, y.cols, scaleOut)
        let ys = TileLoop.span(grid.rows.windows[i], grid.rows.window, scaleOut, rows)
        let xs = TileLoop.span(grid.cols.windows[j], grid.cols.window, scaleOut, cols)
        _ = try sameLength(ys, [0, y.rows], "rows")
        _ = try sameLength(xs, [0, y.cols], "columns")
        for p in 0..<planes {
            for r in 0..<y.rows {
                let dst = (p * rows + ys[0] + r) * cols + xs[0]
                let src = (p * y.rows + r) * y.cols
                // the product and the sum as separate float64 operations, as numpy does them (no fused multiply-add)
                for c in 0..<y.cols { sum[dst + c] += Double(y.data[src + c]) * (wr[r] * wc[c]) }
            }
        }
        for r in 0..<y.rows {
            for c in 0..<y.cols { acc[(ys[0] + r) * cols + xs[0] + c] += wr[r] * wc[c] }
        }
    }

    private func sameLength(_ dst: [Int], _ src: [Int], _ axis: String) throws -> Int {
        let n = dst[1] - dst[0]
        if n != src[1] - src[0] {
            throw TileLoopError.invalid("a window's \(axis) (\(src[1] - src[0])) do not fit the output's \(n)")
        }
        return n
    }

    func finish() throws -> FloatTensor {
        let shape = lead + [rows, cols]
        if exact { return try FloatTensor(data: out, shape: shape) }
        let plane = rows * cols
        return try FloatTensor(data: (0..<sum.count).map { Float(sum[$0] / acc[$0 % plane]) }, shape: shape)
    }
}
