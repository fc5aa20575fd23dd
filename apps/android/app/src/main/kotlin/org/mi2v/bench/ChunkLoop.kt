package org.mi2v.bench

// Pure Kotlin (no Android, no ExecuTorch imports): a tiled stage's chunks in time, the host's own loop line for
// line: mi2v_export/chunking.py (fine_frames, time_from_record, _owned, run_chunked; a core is AxisPlan.core, as
// tiling.core_span). A stage with a `time` record runs its input in windows of frames, each window through the
// stage's tile loop (TileLoop.runStage), and copies each window's core frames into the whole clip's output. Time
// is counted in units, the coarser side's frames: a window of n units covers s(n - 1) + 1 frames on a side of s
// frames per unit, starting at frame s·a for a window starting at unit a. The host is its test oracle
// (tests/e2e/test_app_tile_loop.py, the "decoder-chunked" case).
// The Swift copy is apps/ios/Sources/Mi2vBench/ChunkLoop.swift. Written for Kotlin 1.3+ (like BenchCore.kt).

/** A stage's `time` record (chunking.TimePlan.record): units, core, window and halo in units, frames per unit on
 *  each side, the measured field and video frames per unit. */
class TimePlanRecord(val frames: Int, val tile: Int, val window: Int, val halo: Int, val scaleIn: Int,
                     val scaleOut: Int, val field: Int, val unitFrames: Int)

/** chunking.TimePlan: the axis in units and frames per unit on each side. */
class TimePlan(val axis: AxisPlan, val scaleIn: Int, val scaleOut: Int) {
    val framesIn: Int get() = ChunkLoop.fineFrames(axis.window, scaleIn)
    val framesOut: Int get() = ChunkLoop.fineFrames(axis.window, scaleOut)
}

object ChunkLoop {
    /** chunking.fine_frames: frames on a side of `scale` frames per unit, for `units` units. */
    fun fineFrames(units: Int, scale: Int): Int = scale * (units - 1) + 1

    /** A stage's `time` record from parsed JSON. */
    fun parse(m: Map<*, *>): TimePlanRecord {
        fun int(key: String): Int =
            (m[key] as? Number ?: throw IllegalArgumentException("tiling record: time has no number '$key'")).toInt()
        return TimePlanRecord(int("frames"), int("tile"), int("window"), int("halo"), int("scale_in"),
            int("scale_out"), int("field"), int("unit_frames"))
    }

    /** chunking.time_from_record: the plan for an input of `tIn` frames; IllegalArgumentException when the clip is
     *  not the one the tile model was exported for. */
    fun fromRecord(record: TimePlanRecord, tIn: Int): TimePlan {
        val expected = fineFrames(record.frames, record.scaleIn)
        if (expected != tIn) {
            throw IllegalArgumentException("the tiled artifact was chunked in time for $expected input frames, not " +
                "$tIn: export it again for this clip length")
        }
        val axis = TileLoop.planAxis(record.frames, record.tile, record.halo)
        if (axis.window != record.window || axis.count == 1) {
            throw IllegalArgumentException("the tiled artifact's time window ${record.window} does not match its " +
                "own plan")
        }
        return TimePlan(axis, record.scaleIn, record.scaleOut)
    }

    /** The frames of a (…, T, H, W) tensor. */
    fun frames(x: FloatTensor): Int {
        if (x.shape.size < 3) throw IllegalArgumentException("a time-chunked tensor needs a time axis, got " +
            "${x.shape.toList()}")
        return x.shape[x.shape.size - 3]
    }

    /** x[..., start:start + n, :, :] as a new contiguous tensor. */
    fun slice(x: FloatTensor, start: Int, n: Int): FloatTensor {
        val t = frames(x)
        val plane = x.rows * x.cols
        val outer = FloatTensor.product(x.shape.copyOfRange(0, x.shape.size - 3))
        val out = FloatArray(outer * n * plane)
        for (o in 0 until outer) System.arraycopy(x.data, (o * t + start) * plane, out, o * n * plane, n * plane)
        val shape = x.shape.copyOf()
        shape[shape.size - 3] = n
        return FloatTensor(out, shape)
    }

    /** chunking._owned: the first output frame unit `unit` owns (the clip's end for the unit past the last). */
    private fun owned(unit: Int, scale: Int, total: Int): Int = Math.min(scale * unit, total)

    /** chunking.run_chunked: `run` on every time window of `x`, each window's core frames copied into the whole
     *  clip's output. */
    fun runChunked(run: (FloatTensor) -> FloatTensor, x: FloatTensor, plan: TimePlan): FloatTensor {
        val a = plan.axis
        val total = fineFrames(a.frame, plan.scaleOut)
        var out: FloatArray? = null
        var shape: IntArray? = null
        for (k in 0 until a.count) {
            val y = run(slice(x, a.windows[k] * plan.scaleIn, plan.framesIn))
            if (frames(y) != plan.framesOut) {
                throw IllegalArgumentException("a time window gave ${frames(y)} frames, its plan says " +
                    "${plan.framesOut}")
            }
            val whole = y.shape.copyOf().also { it[it.size - 3] = total }
            val first = shape
            if (first == null) {
                shape = whole
                out = FloatArray(FloatTensor.product(whole))
            } else if (!(whole contentEquals first)) {
                throw IllegalArgumentException("time window output ${y.shape.toList()} does not match the first one's")
            }
            val core = a.core(k)
            val c0 = owned(core[0], plan.scaleOut, total)
            val c1 = owned(core[1], plan.scaleOut, total)
            val o = a.windows[k] * plan.scaleOut
            val plane = y.rows * y.cols
            val outer = FloatTensor.product(y.shape.copyOfRange(0, y.shape.size - 3))
            for (p in 0 until outer) {
                System.arraycopy(y.data, (p * plan.framesOut + c0 - o) * plane, out!!, (p * total + c0) * plane,
                    (c1 - c0) * plane)
            }
        }
        return FloatTensor(out!!, shape!!)
    }
}
