package org.mi2v.bench

// Pure Kotlin (no Android, no ExecuTorch imports): the tile loop of a tiled encoder / decoder, the host's own loop
// line for line: mi2v_export/tiling.py (plan_axis, stage_from_record, _ramp, run_tiled, _copy_core, _core_slices,
// _core, _span) and mi2v_export/runtimes/sessions.py (TiledSession.execute: the stages in order, each window by
// window, stitched; the output of stage k is the input of stage k + 1; a `stream` group through StreamLoop.kt; a
// stage chunked in time through ChunkLoop.kt, as sessions.run_stage does).
// The host is its test oracle:
// tests/e2e/test_app_tile_loop.py runs this loop with kotlinc + java on the windows the host cut and ran, and
// requires the same windows and the same stitched output. The Swift copy is apps/ios/Sources/Mi2vBench/TileLoop.swift.
// Written for Kotlin 1.3+ (like BenchCore.kt).

/** A float32 tensor: row-major values and their shape, whose last two axes are spatial (rows, columns). */
class FloatTensor(val data: FloatArray, val shape: IntArray) {
    init {
        require(shape.size >= 2) { "a tiled tensor needs two spatial axes, got shape ${shape.toList()}" }
        require(product(shape) == data.size) { "${data.size} values do not fill shape ${shape.toList()}" }
    }

    val rows: Int get() = shape[shape.size - 2]
    val cols: Int get() = shape[shape.size - 1]

    /** The leading (non-spatial) axes. */
    val lead: IntArray get() = shape.copyOfRange(0, shape.size - 2)

    /** How many rows × cols planes the leading axes hold. */
    val planes: Int get() = product(lead)

    companion object {
        fun product(dims: IntArray): Int {
            var n = 1
            for (d in dims) n *= d
            return n
        }
    }
}

/** One spatial axis (tiling.AxisPlan): the frame, the core of each tile, the window the tile model sees (all in
 *  grid units), the core starts and the window starts (clamped inside the frame). */
class AxisPlan(val frame: Int, val tile: Int, val window: Int, val halo: Int, val starts: IntArray,
               val windows: IntArray) {
    val count: Int get() = starts.size

    /** [start, end) of core `index` (tiling._core). */
    fun core(index: Int): IntArray = intArrayOf(starts[index], Math.min(starts[index] + tile, frame))
}

/** The 2-D grid (tiling.TileGrid): rows × columns of windows and the receptive field that decides exactness. */
class TileGrid(val rows: AxisPlan, val cols: AxisPlan, val receptiveField: Int) {
    val count: Int get() = rows.count * cols.count

    /** True when every core is at least one receptive field from any window border inside the frame. */
    val exact: Boolean get() = coreCovered(rows, receptiveField) && coreCovered(cols, receptiveField)

    private fun coreCovered(axis: AxisPlan, field: Int): Boolean {
        for (k in 0 until axis.count) {
            val start = axis.starts[k]
            val win = axis.windows[k]
            val end = Math.min(start + axis.tile, axis.frame)
            if (start - win < field && win > 0) return false
            if (win + axis.window - end < field && win + axis.window < axis.frame) return false
        }
        return true
    }
}

/** A stage's plan record as the manifest's tiling record holds it (tiling.StagePlan.record): [rows, cols] pairs,
 *  `unitPx` null for an axis that is not a whole number of units, `whole` null when the record has none. */
class StagePlanRecord(
    val scaleIn: Int,
    val scaleOut: Int,
    val unitPx: List<Int?>,
    val whole: List<Boolean>?,
    val frame: IntArray,
    val tile: IntArray,
    val window: IntArray,
    val halo: IntArray,
    val grid: IntArray,
    val receptiveField: Int,
    val exact: Boolean
)

/** One entry of the tiling record's `stages`: its model file, its tile model's input / output shapes, its plan. */
class TiledStage(val file: String, val inputWindow: IntArray, val outputWindow: IntArray, val plan: StagePlanRecord,
                 val stream: Int? = null, val time: TimePlanRecord? = null)

/** A manifest entry's `tiling` record: the stages in order; `residency` "stage" (one stage model loaded at a
 *  time) or "all" (every stage model kept loaded). */
class TilingRecord(val format: Int, val residency: String, val stages: List<TiledStage>)

/** A stage's plan for one input (tiling.StagePlan, less `unit_px`, which the loop does not read). */
class StagePlan(val grid: TileGrid, val scaleIn: Int, val scaleOut: Int)

/** Builds the records above from parsed JSON: objects as Map, arrays as List, numbers as Number (what
 *  BenchCore.kt's JsonReader returns, or org.json's values turned into maps and lists). */
object TilingJson {
    const val TILING_FORMAT = 1    // sessions.TILING_FORMAT
    const val STREAMED_FORMAT = 2  // sessions.STREAMED_FORMAT: stages with a `stream` group (StreamLoop.kt)
    const val TIMED_FORMAT = 3  // sessions.TIMED_FORMAT: stages with a `time` plan (ChunkLoop.kt)
    val FORMATS = listOf(TILING_FORMAT, STREAMED_FORMAT, TIMED_FORMAT)  // sessions.FORMATS: a later one is refused
    val RESIDENCIES = listOf("stage", "all")

    /** The entry's `tiling` record (sessions.check_record's checks that need only the record). */
    fun parse(record: Map<*, *>): TilingRecord {
        val format = (record["format"] as? Number)?.toInt()
        if (format == null || format !in FORMATS) {
            throw IllegalArgumentException("tiling record format $format is not supported (this app runs formats " +
                "${FORMATS.joinToString(", ")}); update the app")
        }
        val list = record["stages"] as? List<*>
        if (list == null || list.isEmpty()) throw IllegalArgumentException("the tiling record lists no stages")
        val residency = record["residency"] as? String ?: "all"
        if (residency !in RESIDENCIES) {
            throw IllegalArgumentException("tiling record residency '$residency' is not supported " +
                "(this app runs ${RESIDENCIES.joinToString(", ")}); update the app")
        }
        val stages = ArrayList<TiledStage>()
        for (item in list) {
            val s = item as? Map<*, *> ?: throw IllegalArgumentException("tiling record: a stage is not an object")
            val plan = s["plan"] as? Map<*, *> ?: throw IllegalArgumentException("tiling record: a stage has no plan")
            val file = s["file"] as? String ?: throw IllegalArgumentException("tiling record: a stage has no file")
            val stream = s["stream"]
            if (stream != null && stream !is Number) throw IllegalArgumentException("tiling record: a bad stream group")
            val time = s["time"]
            if (time != null && time !is Map<*, *>) throw IllegalArgumentException("tiling record: a bad time plan")
            stages.add(TiledStage(file, ints(s, "input_window"), ints(s, "output_window"), plan(plan),
                (stream as? Number)?.toInt(), (time as? Map<*, *>)?.let { ChunkLoop.parse(it) }))
        }
        if (format != TIMED_FORMAT && stages.any { it.time != null }) {
            throw IllegalArgumentException("the tiling record chunks stages in time but says format $format (time " +
                "chunks are format $TIMED_FORMAT)")
        }
        if (format != STREAMED_FORMAT && stages.any { it.stream != null }) {
            throw IllegalArgumentException("the tiling record streams stages but says format $format (streamed " +
                "stages are format $STREAMED_FORMAT)")
        }
        return TilingRecord(format, residency, stages)
    }

    /** One stage's plan record. */
    fun plan(m: Map<*, *>): StagePlanRecord {
        val unit = ArrayList<Int?>()
        for (u in list(m, "unit_px")) unit.add((u as? Number)?.toInt())
        val rawWhole = m["whole"] as? List<*>
        val whole = if (rawWhole == null) null else rawWhole.map { it == true }
        return StagePlanRecord(int(m, "scale_in"), int(m, "scale_out"), unit, whole, ints(m, "frame"),
            ints(m, "tile"), ints(m, "window"), ints(m, "halo"), ints(m, "grid"), int(m, "receptive_field"),
            m["exact"] == true)
    }

    private fun list(m: Map<*, *>, key: String): List<*> =
        m[key] as? List<*> ?: throw IllegalArgumentException("tiling record: no list '$key'")

    private fun int(m: Map<*, *>, key: String): Int =
        (m[key] as? Number ?: throw IllegalArgumentException("tiling record: no number '$key'")).toInt()

    private fun ints(m: Map<*, *>, key: String): IntArray {
        val items = list(m, key)
        return IntArray(items.size) {
            (items[it] as? Number ?: throw IllegalArgumentException("tiling record: '$key' holds a non-number")).toInt()
        }
    }
}

/** What runs a tiled component's stage models; `runStages` calls it in this order per stage k: `open(k)`, then
 *  `run(k, index, window)` for each window (row by row), then `close(k)` (also when a run throws). A streamed group
 *  opens all its stages first, runs their bands interleaved (each stage's numbered in its own order) and then closes
 *  them. With residency "stage" open loads stage k's model and close releases it; with "all" close may keep it. */
interface StageRunner {
    fun open(stage: Int, record: TiledStage) {}

    /** Stage `stage`'s model on window `index` (its input window shape), returning the output window. */
    fun run(stage: Int, index: Int, window: FloatTensor): FloatTensor

    fun close(stage: Int) {}
}

/** What one call of a tiled component did: the stitched output and each stage's per-window run times (ms). */
class TiledRun(val output: FloatTensor, val tileMs: List<List<Double>>)

object TileLoop {
    /** tiling.plan_axis: cores of `tile` partition [0, frame) (the last one may be shorter); each window is the
     *  core ± halo, shifted inside the frame. A tile as large as the frame gives one window, the whole axis. */
    fun planAxis(frame: Int, tile: Int, halo: Int): AxisPlan {
        if (tile <= 0 || halo < 0) throw IllegalArgumentException("tile $tile and halo $halo must be positive")
        if (tile + 2 * halo >= frame) return AxisPlan(frame, frame, frame, 0, intArrayOf(0), intArrayOf(0))
        val window = tile + 2 * halo
        val count = (frame + tile - 1) / tile
        val starts = IntArray(count) { it * tile }
        val windows = IntArray(count) { Math.min(Math.max(starts[it] - halo, 0), frame - window) }
        return AxisPlan(frame, tile, window, halo, starts, windows)
    }

    /** tiling.stage_from_record: a stage's plan for an input of `inRows` × `inCols` pixels; IllegalArgumentException
     *  when that frame is not the one the (fixed-size) tile model was exported for. */
    fun stageFromRecord(record: StagePlanRecord, inRows: Int, inCols: Int): StagePlan {
        val inHw = intArrayOf(inRows, inCols)
        val whole = if (record.whole != null && record.whole.isNotEmpty()) record.whole
            else listOf(inRows % record.scaleIn == 0, inCols % record.scaleIn == 0)
        val got = IntArray(2) { if (whole[it]) inHw[it] / record.scaleIn else inHw[it] }
        if (!(got contentEquals record.frame)) {
            throw IllegalArgumentException("the tiled artifact was exported for a stage frame of " +
                "${record.frame.toList()} units, not ${got.toList()}: export it again for this resolution")
        }
        val grid = TileGrid(planAxis(record.frame[0], record.tile[0], record.halo[0]),
            planAxis(record.frame[1], record.tile[1], record.halo[1]), record.receptiveField)
        if (grid.rows.window != record.window[0] || grid.cols.window != record.window[1]) {
            throw IllegalArgumentException("the tiled artifact's window ${record.window.toList()} does not match " +
                "its own plan")
        }
        return StagePlan(grid, record.scaleIn, record.scaleOut)
    }

    /** sessions.TiledSession.execute: every stage over its windows, in order, each stage's input its predecessor's
     *  stitched output (only that one is kept); a streamed group's stages band by band together (StreamLoop.kt),
     *  all open while it runs. `onStage(k, output)` sees each whole output (a streamed group's last stage's only).
     *  Each window's `runner.run` is timed. */
    fun runStages(record: TilingRecord, x: FloatTensor, runner: StageRunner,
                  onStage: ((Int, FloatTensor) -> Unit)? = null): TiledRun {
        var current = x
        val tileMs = record.stages.map { ArrayList<Double>() }
        for (group in StreamLoop.groups(record.stages)) {
            val opened = ArrayList<Int>()
            try {
                for (k in group) {
                    runner.open(k, record.stages[k])
                    opened.add(k)
                }
                val runs = group.map { k -> timedRun(runner, k, tileMs[k]) }
                val plans = StreamLoop.plans(group.map { record.stages[it] }, current.rows, current.cols)
                current = if (record.stages[group[0]].stream != null) StreamLoop.runStreamed(runs, current, plans)
                    else runStage(runs[0], current, record.stages[group[0]], plans[0])
            } finally {
                for (k in opened) runner.close(k)
            }
            if (onStage != null) onStage(group.last(), current)
        }
        return TiledRun(current, tileMs)
    }

    /** sessions.run_stage: one (not streamed) stage over the whole input: its time windows (ChunkLoop.kt) where it
     *  has a `time` plan, each over its spatial windows. */
    fun runStage(run: (FloatTensor) -> FloatTensor, x: FloatTensor, stage: TiledStage, plan: StagePlan): FloatTensor {
        val spatial = { w: FloatTensor -> runTiled(run, w, plan.grid, plan.scaleIn, plan.scaleOut) }
        val time = stage.time ?: return spatial(x)
        return ChunkLoop.runChunked(spatial, x, ChunkLoop.fromRecord(time, ChunkLoop.frames(x)))
    }

    /** Stage k's windows through `runner.run`, numbered in the order they run, each one's time added to `times`. */
    private fun timedRun(runner: StageRunner, k: Int, times: ArrayList<Double>): (FloatTensor) -> FloatTensor {
        var index = 0
        return { w: FloatTensor ->
            val t0 = System.nanoTime()
            val y = runner.run(k, index, w)
            times.add((System.nanoTime() - t0) / 1e6)
            index++
            y
        }
    }

    /** tiling.run_tiled: `run` on every window of `x` (`scaleIn` array pixels per grid unit), its outputs
     *  (`scaleOut` pixels per unit) stitched: cores copied when the grid is exact, blended otherwise.
     *  `onTile(index, count)` after each window. */
    fun runTiled(run: (FloatTensor) -> FloatTensor, x: FloatTensor, grid: TileGrid, scaleIn: Int, scaleOut: Int,
                 onTile: ((Int, Int) -> Unit)? = null): FloatTensor {
        val rows = grid.rows
        val cols = grid.cols
        if (grid.count == 1) {
            val y = run(x)
            if (onTile != null) onTile(0, 1)
            return y
        }
        var stitch: Stitch? = null
        for (i in 0 until rows.count) {
            for (j in 0 until cols.count) {
                val y0 = rows.windows[i]
                val x0 = cols.windows[j]
                val window = crop(x, span(y0, rows.window, scaleIn, x.rows), span(x0, cols.window, scaleIn, x.cols))
                val y = run(window)
                val s = stitch ?: Stitch(grid, scaleOut, y)
                stitch = s
                s.add(y, i, j)
                if (onTile != null) onTile(i * cols.count + j, grid.count)
            }
        }
        return stitch!!.finish()
    }

    /** tiling._ramp: blend weights along one axis of a window's output, linear over the halo at borders inside
     *  the frame. */
    fun ramp(axis: AxisPlan, index: Int, sizeOut: Int, scaleOut: Int): DoubleArray {
        val weights = DoubleArray(sizeOut) { 1.0 }
        val fade = 2 * axis.halo * scaleOut
        if (fade == 0) return weights
        val ramp = DoubleArray(fade) { (it + 0.5) / fade }
        if (axis.windows[index] > 0) {
            for (k in 0 until fade) weights[k] = ramp[k]
        }
        if (axis.windows[index] + axis.window < axis.frame) {
            for (k in 0 until fade) {
                val at = sizeOut - fade + k
                weights[at] = Math.min(weights[at], ramp[fade - 1 - k])
            }
        }
        return weights
    }

    /** tiling._span, clamped to the axis' `size` as a numpy slice is: [start·scale, (start + size)·scale). */
    fun span(start: Int, size: Int, scale: Int, dim: Int): IntArray =
        intArrayOf(Math.min(start * scale, dim), Math.min((start + size) * scale, dim))

    /** tiling._core_slices: (destination, source) ranges of a window's core along one axis; a single window is
     *  copied whole (`outSize` and `ySize` are the axis' sizes in the output and in the window's output). */
    fun coreSlices(axis: AxisPlan, index: Int, s: Int, outSize: Int, ySize: Int): Array<IntArray> {
        if (axis.count == 1) return arrayOf(intArrayOf(0, outSize), intArrayOf(0, ySize))
        val core = axis.core(index)
        val w = axis.windows[index]
        return arrayOf(intArrayOf(Math.min(core[0] * s, outSize), Math.min(core[1] * s, outSize)),
            intArrayOf(Math.min((core[0] - w) * s, ySize), Math.min((core[1] - w) * s, ySize)))
    }

    /** x[..., rows[0]:rows[1], cols[0]:cols[1]] as a new contiguous tensor. */
    fun crop(x: FloatTensor, rows: IntArray, cols: IntArray): FloatTensor {
        val h = rows[1] - rows[0]
        val w = cols[1] - cols[0]
        val planes = x.planes
        val out = FloatArray(planes * h * w)
        for (p in 0 until planes) {
            for (r in 0 until h) {
                System.arraycopy(x.data, (p * x.rows + rows[0] + r) * x.cols + cols[0], out, (p * h + r) * w, w)
            }
        }
        return FloatTensor(out, x.lead + intArrayOf(h, w))
    }
}

/** The stitched output of one stage (run_tiled's `out` / `acc`), shaped by its first window's output: the leading
 *  axes of that output, and per spatial axis its size when the axis is one window, else frame × scaleOut.
 *  Exact: cores copied as float32 (tiling._copy_core). Blended: each window's output × its outer ramp weights summed
 *  in float64, the weights summed alike, divided at the end and rounded to float32. */
private class Stitch(val grid: TileGrid, val scaleOut: Int, first: FloatTensor) {
    val lead: IntArray = first.lead
    val planes: Int = first.planes
    val rows: Int = if (grid.rows.count == 1) first.rows else grid.rows.frame * scaleOut
    val cols: Int = if (grid.cols.count == 1) first.cols else grid.cols.frame * scaleOut
    val exact: Boolean = grid.exact
    val out: FloatArray? = if (exact) FloatArray(planes * rows * cols) else null
    val sum: DoubleArray? = if (exact) null else DoubleArray(planes * rows * cols)
    val acc: DoubleArray? = if (exact) null else DoubleArray(rows * cols)

    fun add(y: FloatTensor, i: Int, j: Int) {
        if (!(y.lead contentEquals lead)) {
            throw IllegalArgumentException("window output ${y.shape.toList()} does not match the first one's " +
                "leading axes ${lead.toList()}")
        }
        if (exact) copyCore(y, i, j) else blend(y, i, j)
    }

    /** tiling._copy_core: out[..., dr, dc] = y[..., sr, sc]. */
    private fun copyCore(y: FloatTensor, i: Int, j: Int) {
        val r = TileLoop.coreSlices(grid.rows, i, scaleOut, rows, y.rows)
        val c = TileLoop.coreSlices(grid.cols, j, scaleOut, cols, y.cols)
        val h = sameLength(r[0], r[1], "rows")
        val w = sameLength(c[0], c[1], "columns")
        val o = out!!
        for (p in 0 until planes) {
            for (k in 0 until h) {
                System.arraycopy(y.data, (p * y.rows + r[1][0] + k) * y.cols + c[1][0],
                    o, (p * rows + r[0][0] + k) * cols + c[0][0], w)
            }
        }
    }

    /** run_tiled's blend: out[..., ys, xs] += y · outer(ramp_rows, ramp_cols); acc[ys, xs] += the weights. */
    private fun blend(y: FloatTensor, i: Int, j: Int) {
        val wr = TileLoop.ramp(grid.rows, i, y.rows, scaleOut)
        val wc = TileLoop.ramp(grid.cols, j, y.cols, scaleOut)
        val ys = TileLoop.span(grid.rows.windows[i], grid.rows.window, scaleOut, rows)
        val xs = TileLoop.span(grid.cols.windows[j], grid.cols.window, scaleOut, cols)
        sameLength(ys, intArrayOf(0, y.rows), "rows")
        sameLength(xs, intArrayOf(0, y.cols), "columns")
        val s = sum!!
        val a = acc!!
        for (p in 0 until planes) {
            for (r in 0 until y.rows) {
                val dst = (p * rows + ys[0] + r) * cols + xs[0]
                val src = (p * y.rows + r) * y.cols
                for (c in 0 until y.cols) s[dst + c] += y.data[src + c].toDouble() * (wr[r] * wc[c])
            }
        }
        for (r in 0 until y.rows) {
            for (c in 0 until y.cols) a[(ys[0] + r) * cols + xs[0] + c] += wr[r] * wc[c]
        }
    }

    private fun sameLength(dst: IntArray, src: IntArray, axis: String): Int {
        val n = dst[1] - dst[0]
        if (n != src[1] - src[0]) {
            throw IllegalArgumentException("a window's $axis (${src[1] - src[0]}) do not fit the output's $n")
        }
        return n
    }

    fun finish(): FloatTensor {
        val shape = lead + intArrayOf(rows, cols)
        if (exact) return FloatTensor(out!!, shape)
        val s = sum!!
        val a = acc!!
        val plane = rows * cols
        return FloatTensor(FloatArray(s.size) { (s[it] / a[it % plane]).toFloat() }, shape)
    }
}
