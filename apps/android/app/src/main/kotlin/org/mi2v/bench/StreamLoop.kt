package org.mi2v.bench

// Pure Kotlin: row streaming of a tiling record's `stream` group (format 2), the host's own loop line for line:
// mi2v_export/streaming.py (_Source, _Rows, run_streamed). A group's steps run on full-width row bands as a
// wavefront: a band asks the step before for the rows it needs, and rows no later band reads are dropped, so only
// the group's input and its last step's output are ever whole. TileLoop.runStages calls it for each streamed group.
// The host is its test oracle (tests/e2e/test_app_tile_loop.py, case "decoder-streamed"). The Swift copy is
// apps/ios/Sources/Mi2vBench/StreamLoop.swift. Kotlin 1.3+.

/** Rows of a step's input: `take` returns rows [lo, hi) (clamped to what exists, as a numpy slice is); rows before
 *  `release(before)` are no longer needed. */
private interface RowSource {
    fun take(lo: Int, hi: Int): FloatTensor
    fun release(before: Int)
}

/** streaming._Source: the group's input, kept whole (small by construction: the stage's own input). */
private class WholeInput(val x: FloatTensor) : RowSource {
    override fun take(lo: Int, hi: Int): FloatTensor =
        TileLoop.crop(x, intArrayOf(Math.min(lo, x.rows), Math.min(hi, x.rows)), intArrayOf(0, x.cols))

    override fun release(before: Int) {}
}

/** streaming._Rows: one step's output rows as its bands produce them, in order. */
private class StepRows(val run: (FloatTensor) -> FloatTensor, plan: StagePlan, val up: RowSource) : RowSource {
    val rows: AxisPlan = plan.grid.rows
    val sIn = plan.scaleIn
    val sOut = plan.scaleOut
    var next = 0                                       // the next band to run
    val chunks = ArrayList<Pair<Int, FloatTensor>>()   // (first row, rows) produced and still needed
    var end = 0                                        // output rows produced so far

    init {
        if (plan.grid.cols.count != 1) {
            throw IllegalArgumentException("a streamed step runs on full-width row bands; its plan splits the columns")
        }
    }

    val finished: Boolean get() = next == rows.count

    /** Run the next band: its first output row and its core rows; input rows no later band reads are released. */
    fun band(): Pair<Int, FloatTensor> {
        val i = next
        val lo = rows.windows[i] * sIn
        val y = run(up.take(lo, lo + rows.window * sIn))
        next++
        up.release(if (next < rows.count) rows.windows[next] * sIn else Int.MAX_VALUE)
        if (rows.count == 1) return Pair(0, y)
        val core = rows.core(i)
        val w = rows.windows[i]
        val r = intArrayOf(Math.min((core[0] - w) * sOut, y.rows), Math.min((core[1] - w) * sOut, y.rows))
        return Pair(core[0] * sOut, TileLoop.crop(y, r, intArrayOf(0, y.cols)))
    }

    override fun take(lo: Int, hi: Int): FloatTensor {
        while (end < hi && !finished) {
            val produced = band()
            chunks.add(produced)
            end = produced.first + produced.second.rows
        }
        val parts = ArrayList<FloatTensor>()
        for ((s, part) in chunks) {
            if (s < hi && s + part.rows > lo) {
                val a = Math.max(lo - s, 0)
                parts.add(TileLoop.crop(part, intArrayOf(a, Math.min(hi - s, part.rows)), intArrayOf(0, part.cols)))
            }
        }
        return if (parts.size == 1) parts[0] else StreamLoop.concatRows(parts)
    }

    override fun release(before: Int) {
        chunks.removeAll { it.first + it.second.rows <= before }
    }
}

object StreamLoop {
    /** streaming.run_streamed: the chain of `runs` (step k's band model, planned by `plans[k]`) on `x`; the last
     *  step's whole output. */
    fun runStreamed(runs: List<(FloatTensor) -> FloatTensor>, x: FloatTensor, plans: List<StagePlan>): FloatTensor {
        if (runs.isEmpty() || runs.size != plans.size) {
            throw IllegalArgumentException("a streamed stage needs one plan per step")
        }
        var upstream: RowSource = WholeInput(x)
        for (k in runs.indices) upstream = StepRows(runs[k], plans[k], upstream)
        val last = upstream as StepRows
        var out: FloatArray? = null
        var shape = IntArray(0)
        while (!last.finished) {
            val (start, rows) = last.band()
            if (out == null) {
                if (last.rows.count == 1) return rows
                shape = rows.lead + intArrayOf(last.rows.frame * last.sOut, rows.cols)
                out = FloatArray(FloatTensor.product(shape))
            }
            val height = shape[shape.size - 2]
            for (p in 0 until rows.planes) {
                System.arraycopy(rows.data, p * rows.rows * rows.cols, out, (p * height + start) * rows.cols,
                    rows.rows * rows.cols)
            }
        }
        return FloatTensor(out!!, shape)
    }

    /** np.concatenate(parts, axis=-2): tensors with the same leading axes and columns, stacked along rows. */
    fun concatRows(parts: List<FloatTensor>): FloatTensor {
        val first = parts[0]
        val height = parts.sumBy { it.rows }
        val out = FloatArray(first.planes * height * first.cols)
        var at = 0
        for (part in parts) {
            require(part.lead contentEquals first.lead && part.cols == first.cols) { "bands of different shapes" }
            for (p in 0 until part.planes) {
                System.arraycopy(part.data, p * part.rows * part.cols, out, (p * height + at) * part.cols,
                    part.rows * part.cols)
            }
            at += part.rows
        }
        return FloatTensor(out, first.lead + intArrayOf(height, first.cols))
    }

    /** sessions.stream_groups: stage indices grouped as they run, consecutive stages of one `stream` group
     *  together, any other alone. */
    fun groups(stages: List<TiledStage>): List<List<Int>> {
        val groups = ArrayList<ArrayList<Int>>()
        for (k in stages.indices) {
            val group = stages[k].stream
            if (group != null && groups.isNotEmpty() && stages[groups.last()[0]].stream == group) {
                groups.last().add(k)
            } else {
                groups.add(arrayListOf(k))
            }
        }
        return groups
    }

    /** sessions.group_plans: each stage's plan for a group whose first stage reads `inRows` × `inCols`; a streamed
     *  stage reads its predecessor's whole output (a one-window axis keeps the tile model's own size). */
    fun plans(stages: List<TiledStage>, inRows: Int, inCols: Int): List<StagePlan> {
        val plans = ArrayList<StagePlan>()
        var hw = intArrayOf(inRows, inCols)
        for (stage in stages) {
            val plan = TileLoop.stageFromRecord(stage.plan, hw[0], hw[1])
            plans.add(plan)
            val out = stage.outputWindow
            val axes = arrayOf(plan.grid.rows, plan.grid.cols)
            hw = IntArray(2) { if (axes[it].count == 1) out[out.size - 2 + it] else axes[it].frame * plan.scaleOut }
        }
        return plans
    }
}
