package org.mi2v.bench

// The host as the test oracle of PipelineLoop.kt. tests/e2e/test_app_pipeline_loop.py runs `mi2v generate`'s code
// (pipeline.run_generate) on tiny-preset ONNX artifacts and writes a case folder: the config, the input image's RGB
// bytes, the noise (and the posterior noise) the host drew, every load / run / release of a component in order with
// each run's inputs and outputs, the schedules of several step counts, the reference latent, the latent after each
// step, the cropped video and the uint8 frames, as raw little-endian files. This runs PipelineLoop.generate on the
// image and noise with a runner that requires each call to be the host's next one (same component, same input
// names, same values) and returns the host's outputs for it; then the schedule, the latents, the video and the
// frames must equal the host's. Everything bit for bit, except where a case sets `latent_tolerance` (a posterior
// sample: torch's float32 exp and Math.exp may differ by an ulp): the latents then within that times the tensor's
// largest |value|. Usage: java -cp … org.mi2v.bench.PipelineLoopOracle CASE_DIR…  (exit 1, a line per failing case).

import java.io.File

object PipelineLoopOracle {
    class Mismatch(message: String) : Exception(message)

    /** How many values were compared and how many of them were not bit for bit the host's. */
    class Tally {
        var compared = 0L
        var differing = 0L
    }

    /** Max |got − want|; Mismatch when the shapes differ, or a value's bits differ and it is further than
     *  `tolerance` × the host tensor's largest |value| (0: the bits must be equal). */
    fun compare(what: String, got: NdTensor, want: NdTensor, tolerance: Double, tally: Tally): Double {
        if (!(got.shape contentEquals want.shape)) {
            throw Mismatch("$what: shape ${got.shape.toList()}, the host's is ${want.shape.toList()}")
        }
        var scale = 0.0
        for (b in want.data) scale = Math.max(scale, Math.abs(b.toDouble()))
        var maxAbs = 0.0
        for (i in got.data.indices) {
            val a = got.data[i]
            val b = want.data[i]
            val same = java.lang.Float.floatToRawIntBits(a) == java.lang.Float.floatToRawIntBits(b)
            val d = Math.abs(a.toDouble() - b.toDouble())
            if (!same && (tolerance == 0.0 || !(d <= tolerance * scale))) {
                val allowed = if (tolerance == 0.0) "none, bit for bit" else "${tolerance * scale}"
                throw Mismatch("$what: value $i is $a, the host's is $b (|Δ| allowed: $allowed)")
            }
            tally.compared++
            if (!same) tally.differing++
            if (d > maxAbs) maxAbs = d
        }
        return maxAbs
    }

    /** A case folder: `case.json` (what the test wrote) and the raw files it names. */
    class OracleCase(val dir: File) {
        val root = JsonReader(File(dir, "case.json").readText()).parse() as Map<*, *>
        val name = root["name"] as String
        private val c = root["config"] as Map<*, *>
        val config = GenerateConfig(int(c["height"]), int(c["width"]), int(c["frames"]), int(c["steps"]),
            (c["flow_score"] as Number).toDouble(), c["posterior"] as String)
        val latentTolerance = (root["latent_tolerance"] as? Number)?.toDouble() ?: 0.0
        val rgb: ByteArray = bytes(root["image_rgb"])
        val noise = tensor(root["noise"])
        val posteriorNoise: NdTensor? = if (root["posterior_noise"] == null) null else tensor(root["posterior_noise"])
        val events = (root["events"] as List<*>).map { it as Map<*, *> }

        fun int(v: Any?): Int = (v as Number).toInt()

        fun shape(m: Map<*, *>): IntArray {
            val s = m["shape"] as List<*>
            return IntArray(s.size) { int(s[it]) }
        }

        fun tensor(value: Any?): NdTensor {
            val m = value as Map<*, *>
            val shape = shape(m)
            return NdTensor(OutputCheck.readFloats(File(dir, m["file"] as String), FloatTensor.product(shape)), shape)
        }

        fun bytes(value: Any?): ByteArray {
            val m = value as Map<*, *>
            val data = File(dir, m["file"] as String).readBytes()
            if (data.size != FloatTensor.product(shape(m))) throw Mismatch("${m["file"]}: ${data.size} bytes")
            return data
        }
    }

    /** Replays the host's component calls: each open / run / close must be the host's next load / run / release. */
    class OracleRunner(val case: OracleCase, val tally: Tally) : ComponentRunner {
        var next = 0
        var failed = false

        private fun expect(kind: String, component: String): Map<*, *> {
            val host = if (next < case.events.size) case.events[next] else null
            if (host == null || host["event"] != kind || host["component"] != component) {
                failed = true
                val was = if (host == null) "nothing more" else "${host["event"]} ${host["component"]}"
                throw Mismatch("call $next: the loop did $kind $component, the host $was")
            }
            next++
            return host
        }

        override fun open(component: String) {
            expect("load", component)
        }

        override fun run(component: String, inputs: Map<String, NdTensor>): Map<String, NdTensor> {
            val call = next
            val host = expect("run", component)
            val want = host["inputs"] as Map<*, *>
            if (inputs.keys.toList() != want.keys.toList()) {
                failed = true
                throw Mismatch("call $call ($component): inputs ${inputs.keys}, the host's ${want.keys}")
            }
            try {
                for ((name, x) in inputs) {
                    val tolerance = if (name == "latent") case.latentTolerance else 0.0
                    compare("call $call ($component) input $name", x, case.tensor(want[name]), tolerance, tally)
                }
            } catch (e: Mismatch) {
                failed = true
                throw e
            }
            val out = LinkedHashMap<String, NdTensor>()
            for ((name, value) in host["outputs"] as Map<*, *>) out[name as String] = case.tensor(value)
            return out
        }

        /** Not checked once a mismatch is on its way out (close runs in a finally). */
        override fun close(component: String) {
            if (!failed) expect("release", component)
        }
    }

    /** Each recorded host schedule against PipelineLoop.flowSchedule, bit for bit; how many. */
    fun checkSchedules(case: OracleCase, tally: Tally): Int {
        val list = case.root["schedules"] as? List<*> ?: return 0
        for (item in list) {
            val m = item as Map<*, *>
            val steps = case.int(m["steps"])
            val got = PipelineLoop.flowSchedule(steps)
            compare("schedule of $steps steps: timesteps", NdTensor(got.timesteps, intArrayOf(steps)),
                case.tensor(m["timesteps"]), 0.0, tally)
            compare("schedule of $steps steps: sigmas", NdTensor(got.sigmas, intArrayOf(steps + 1)),
                case.tensor(m["sigmas"]), 0.0, tally)
        }
        return list.size
    }

    fun checkCase(dir: File): String {
        val case = OracleCase(dir)
        val tally = Tally()
        val schedules = checkSchedules(case, tally)
        val runner = OracleRunner(case, tally)
        val geo = case.config.geometry
        val image = PipelineLoop.imageTensor(case.rgb, geo.height, geo.width)
        val run = PipelineLoop.generate(image, case.noise, case.config, runner, case.posteriorNoise)
        if (runner.next != case.events.size) {
            throw Mismatch("the loop made ${runner.next} calls, the host ${case.events.size}")
        }
        checkRun(case, run, tally)
        val stepsMs = run.stepMs.map { Math.round(it * 1000) / 1000.0 }
        return "${case.name}: ${case.config.steps} step(s), posterior ${run.posterior}, ${case.events.size} calls, " +
            "$schedules schedules; step ms $stepsMs; " +
            "bit for bit: ${tally.differing == 0L} (${tally.differing} of ${tally.compared} values differ)"
    }

    /** The run's schedule, reference latent, latents, video and frames against the host's; its timings' keys. */
    fun checkRun(case: OracleCase, run: PipelineRun, tally: Tally) {
        val r = case.root
        val sched = r["schedule"] as Map<*, *>
        val steps = case.config.steps
        compare("timesteps", NdTensor(run.schedule.timesteps, intArrayOf(steps)), case.tensor(sched["timesteps"]),
            0.0, tally)
        compare("sigmas", NdTensor(run.schedule.sigmas, intArrayOf(steps + 1)), case.tensor(sched["sigmas"]), 0.0,
            tally)
        if (run.posterior != r["posterior"]) throw Mismatch("posterior ${run.posterior}, the host's ${r["posterior"]}")
        compare("reference latent", run.condLatent, case.tensor(r["cond_latent"]), case.latentTolerance, tally)
        val latents = r["latents"] as List<*>
        if (run.latents.size != latents.size) throw Mismatch("${run.latents.size} latents, the host ${latents.size}")
        for (i in latents.indices) {
            compare("latent after step ${i + 1}", run.latents[i], case.tensor(latents[i]), case.latentTolerance, tally)
        }
        compare("video", run.video, case.tensor(r["video"]), 0.0, tally)
        val frames = case.bytes(r["frames"])
        if (!(run.frames contentEquals frames)) throw Mismatch("the uint8 frames differ from the host's")
        val keys = listOf("load_encoder", "load", "encode", "load_denoiser", "denoise", "load_decoder", "decode",
            "postprocess")
        if (run.timingsMs.keys.toList() != keys || run.stepMs.size != steps) {
            throw Mismatch("timings ${run.timingsMs.keys} with ${run.stepMs.size} steps")
        }
    }

    @JvmStatic
    fun main(args: Array<String>) = OracleCases.run("PipelineLoopOracle", args, ::checkCase)
}
