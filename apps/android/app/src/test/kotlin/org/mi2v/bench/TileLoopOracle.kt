package org.mi2v.bench

// The host as the test oracle of TileLoop.kt. tests/e2e/test_app_tile_loop.py runs a real tiled component through
// the host's runtime layer (mi2v_export/runtimes/sessions.py) and writes a case folder: the manifest's tiling record,
// the whole input, every window the host cut and its output, each stage's stitched output and the final output, as
// raw little-endian float32 files. This runs TileLoop.runStages over the host's input with a runner that requires
// each window it is given to be the host's window k of that stage (same shape, same values) and returns the host's
// output for it; then each stage's stitched output and the final output must equal the host's. A stage whose plan
// is exact must match bit for bit, a blended one within 1e-6 (and a window cut from a blended stage's output too).
// Usage: java -cp … org.mi2v.bench.TileLoopOracle CASE_DIR…  (exit 1, one line per failing case). An object with
// its own main: SampleReport.kt has the package's top-level one.

import java.io.File

object TileLoopOracle {
    const val BLEND_TOLERANCE = 1e-6

    class Mismatch(message: String) : Exception(message)

    /** A raw float32 file the host wrote, and its shape. */
    class HostTensor(val file: File, val shape: IntArray) {
        fun read(): FloatTensor = FloatTensor(OutputCheck.readFloats(file, FloatTensor.product(shape)), shape)
    }

    class HostWindow(val input: HostTensor, val output: HostTensor)

    /** A stage's windows, and its stitched output (null inside a streamed group: only the group's last is whole). */
    class HostStage(val output: HostTensor?, val windows: List<HostWindow>, val exact: Boolean)

    /** A case folder: `case.json` (what the test wrote) and the files it names. */
    class OracleCase(val dir: File) {
        private val root = JsonReader(File(dir, "case.json").readText()).parse() as Map<*, *>
        val name = root["name"] as String
        val tiling = TilingJson.parse(root["tiling"] as Map<*, *>)
        val input = tensor(root["input"])
        val output = tensor(root["output"])
        val stages: List<HostStage> = (root["stages"] as List<*>).mapIndexed { k, s ->
            val m = s as Map<*, *>
            HostStage(m["output"]?.let { tensor(it) }, (m["windows"] as List<*>).map {
                val w = it as Map<*, *>
                HostWindow(tensor(w["input"]), tensor(w["output"]))
            }, tiling.stages[k].plan.exact)
        }

        private fun tensor(value: Any?): HostTensor {
            val m = value as Map<*, *>
            val shape = m["shape"] as List<*>
            return HostTensor(File(dir, m["file"] as String), IntArray(shape.size) { (shape[it] as Number).toInt() })
        }

        /** What stage k's stitched output may differ from the host's by: nothing when its plan is exact. */
        fun tolerance(stage: Int): Double = if (stages[stage].exact) 0.0 else BLEND_TOLERANCE
    }

    /** How many compared values were not bit for bit the host's, over a case. */
    class Tally {
        var differing = 0L
    }

    /** Max |got − want|; Mismatch when the shapes differ, a value is further than `tolerance` (0: the bits must be
     *  equal) or only one of the two is NaN. */
    fun compare(what: String, got: FloatTensor, want: FloatTensor, tolerance: Double, tally: Tally): Double {
        if (!(got.shape contentEquals want.shape)) {
            throw Mismatch("$what: shape ${got.shape.toList()}, the host's is ${want.shape.toList()}")
        }
        var maxAbs = 0.0
        for (i in got.data.indices) {
            val a = got.data[i]
            val b = want.data[i]
            val same = java.lang.Float.floatToRawIntBits(a) == java.lang.Float.floatToRawIntBits(b)
            val d = Math.abs(a.toDouble() - b.toDouble())
            if (!same && (tolerance == 0.0 || !(d <= tolerance))) {
                val allowed = if (tolerance == 0.0) "none, bit for bit" else tolerance.toString()
                throw Mismatch("$what: value $i is $a, the host's is $b (|Δ| allowed: $allowed)")
            }
                if (!same) tally.differing++
            if (d > maxAbs) maxAbs = d
        }
        return maxAbs
    }

    /** Hands the loop the host's window outputs, after checking the windows it cut against the host's. Stages open
     *  in order; a streamed group's stages are open together and their windows interleave, each stage's in order. */
    class OracleRunner(val case: OracleCase, val tally: Tally) : StageRunner {
        var opened = -1
        val open = HashSet<Int>()
        val ran = IntArray(case.stages.size)
        var checked = 0
        var windowMaxAbs = 0.0

        override fun open(stage: Int, record: TiledStage) {
            if (stage != opened + 1) throw Mismatch("stage $stage opened after stage $opened")
            opened = stage
            open.add(stage)
        }

        override fun close(stage: Int) {
            open.remove(stage)
        }

        override fun run(stage: Int, index: Int, window: FloatTensor): FloatTensor {
            val host = case.stages[stage].windows
            if (stage !in open) throw Mismatch("a window of stage $stage ran while stages $open are open")
            if (index != ran[stage] || index >= host.size) {
                throw Mismatch("stage $stage: window $index ran after ${ran[stage]} windows; the host ran ${host.size}")
            }
            val tolerance = if (stage == 0) 0.0 else case.tolerance(stage - 1)
            val d = compare("stage $stage window $index input", window, host[index].input.read(), tolerance, tally)
            windowMaxAbs = Math.max(windowMaxAbs, d)
            ran[stage]++
            return host[index].output.read()
        }

        /** After the whole output of stage k (not in `close`, which also runs while a mismatch propagates): every
         *  stage up to k ran all the host's windows. */
        fun checkCount(stage: Int) {
            while (checked <= stage) {
                val want = case.stages[checked].windows.size
                if (ran[checked] != want) {
                    throw Mismatch("stage $checked: the loop ran ${ran[checked]} windows, the host $want")
                }
                checked++
            }
        }
    }

    fun checkCase(dir: File): String {
        val case = OracleCase(dir)
        if (case.stages.size != case.tiling.stages.size) throw Mismatch("the case lists ${case.stages.size} stages")
        val tally = Tally()
        val runner = OracleRunner(case, tally)
        val stageMaxAbs = ArrayList<Double>()
        val result = TileLoop.runStages(case.tiling, case.input.read(), runner) { k, out ->
            runner.checkCount(k)
            val want = case.stages[k].output ?: throw Mismatch("stage $k: the host kept no whole output for it")
            stageMaxAbs.add(compare("stage $k stitched output", out, want.read(), case.tolerance(k), tally))
        }
        runner.checkCount(case.stages.size - 1)
        val last = case.stages.size - 1
        val outMaxAbs = compare("final output", result.output, case.output.read(), case.tolerance(last), tally)
        val windows = result.tileMs.map { it.size }
        return "${case.name}: ${case.stages.size} stages, windows $windows, exact ${case.stages.map { it.exact }}; " +
            "max |Δ| windows ${runner.windowMaxAbs}, stages $stageMaxAbs, output $outMaxAbs; " +
            "bit for bit: ${tally.differing == 0L} (${tally.differing} values differ)"
    }

    @JvmStatic
    fun main(args: Array<String>) = OracleCases.run("TileLoopOracle", args, ::checkCase)
}
