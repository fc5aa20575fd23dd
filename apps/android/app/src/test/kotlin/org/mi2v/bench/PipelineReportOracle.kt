package org.mi2v.bench

import java.io.File

// The driver tests/e2e/test_app_pipeline_bench.py runs (kotlinc + java) with the host as its oracle:
//
//   report CASE.json OUT.json
//     the clip measurements of CASE (the host's numbers, in ms) through PipelineReport.clip / block / report, the
//     app's report written to OUT (the host compares its `pipeline` block with PipelineRun's on the same clips);
//   clips PLAN.json IMAGE.f32 NOISE.f32 VIDEO_PREFIX CLIPS FAIL_AT OUT.json PARSED.json
//     the host-written plan through PipelinePlan.parse (what it read goes to PARSED), then PipelineClips.run with
//     a JVM stand-in for ExecuTorch (StandInRunner: simple arithmetic, the decoder through TiledComponent when the
//     plan tiles it), failing in clip FAIL_AT (-1: never); the report to OUT, the videos next to VIDEO_PREFIX.
fun main(args: Array<String>) {
    when (args[0]) {
        "report" -> reportCase(File(args[1]), File(args[2]))
        "clips" -> clipsCase(args)
        else -> throw IllegalArgumentException("unknown mode ${args[0]}")
    }
}

private fun reportCase(case: File, out: File) {
    val root = JsonReader(case.readText()).parse() as Map<*, *>
    val f = root["facts"] as Map<*, *>
    val clips = ArrayList<LinkedHashMap<String, Any?>>()
    for ((i, item) in (root["clips"] as List<*>).withIndex()) {
        val c = item as Map<*, *>
        val timings = LinkedHashMap<String, Double>()
        for ((k, v) in c["timings_ms"] as Map<*, *>) timings[k as String] = (v as Number).toDouble()
        val frames = File(case.parentFile, c["frames_file"] as String).readBytes()
        val t = ClipTimes(timings, (c["step_ms"] as List<*>).map { (it as Number).toDouble() }, d(c, "preprocess_ms")!!,
            d(c, "total_ms")!!, d(c, "started_s")!!, (c["peak_rss_kb"] as? Number)?.toLong(),
            (c["baseline_rss_kb"] as? Number)?.toLong(), c["memory_method"] as? String, Digest.sha256Hex(frames),
            strMap(c["before"]), strMap(c["after"]))
        clips.add(PipelineReport.clip(i, t, (f["frames"] as Number).toInt()))
    }
    val facts = PipelineFacts((f["steps"] as Number).toInt(), (f["frames"] as Number).toInt(),
        (f["seed"] as? Number)?.toLong(), f["image"] as String, (f["clips_requested"] as Number).toInt(),
        d(f, "duration_s"), d(f, "elapsed_s"), d(f, "prepare_ms"), f["stopped"] as? String)
    write(out, PipelineReport.block(clips, facts))
}

private fun clipsCase(args: Array<String>) {
    val plan = PipelinePlan.parse(File(args[1]).readText())
    val parsed = linkedMapOf<String, Any?>("height" to plan.config.height, "width" to plan.config.width,
        "frames" to plan.config.frames, "steps" to plan.config.steps, "flow_score" to plan.config.flowScore,
        "posterior" to plan.config.posterior, "seed" to plan.seed, "image" to plan.image)
    val comps = linkedMapOf<String, Any?>()
    for ((name, c) in plan.components) {
        comps[name] = linkedMapOf("path" to c.path, "method" to c.method, "inputs" to c.inputs, "outputs" to c.outputs,
            "stages" to c.tiling?.stages?.map { it.file }, "residency" to c.tiling?.residency)
    }
    parsed["components"] = comps
    Report.writeAtomically(File(args[8]), Json.write(parsed))
    val req = ClipsRequest(plan, File(args[2]), File(args[3]), args[5].toInt(), null, File(args[4]))
    var thermal = 0L
    val run = PipelineClips.run(req, StandInRunner(plan, args[6].toInt()), {
        linkedMapOf<String, Any?>("thermal_status" to thermal++ / 2)  // rises during the run: a sustained sign
    })
    write(File(args[7]), run.block)
}

private fun write(out: File, block: LinkedHashMap<String, Any?>) {
    val device = linkedMapOf<String, Any?>("transport" to "adb", "simulated_device" to false, "model" to "JVM")
    val protocol = linkedMapOf<String, Any?>("mode" to "pipeline", "runner" to RUNNER,
        "timed_region" to "PipelineLoop.generate")
    val tool = linkedMapOf<String, Any?>("name" to "mi2v-android-app", "version" to "test")
    val report = PipelineReport.report(device, protocol, linkedMapOf("before" to mapOf<String, Any?>(),
        "after" to mapOf<String, Any?>()), block, listOf(), tool, "2026-01-01T00:00:00Z")
    Report.writeAtomically(out, Json.write(report))
}

private fun d(m: Map<*, *>, key: String): Double? = (m[key] as? Number)?.toDouble()

private fun strMap(v: Any?): Map<String, Any?> {
    val out = LinkedHashMap<String, Any?>()
    for ((k, x) in v as Map<*, *>) out[k as String] = x
    return out
}

/** A stand-in for the ExecuTorch programs: the encoder averages each 32 × 32 patch, the denoiser's velocity is
 *  −latent / 2 + t / 1e5, the decoder (tiled through TileLoop when the plan tiles it: stage 0 decodes, the later
 *  stages pass their window on) spreads tanh of each latent pixel over its 32 × 32 patch. It throws in the
 *  denoiser of clip `failAt`. */
class StandInRunner(private val plan: PipelinePlan, private val failAt: Int) : ComponentRunner {
    private var clip = -1
    private var tiled: TiledComponent? = null

    override fun open(component: String) {
        if (component == PipelineLoop.ENCODER) clip++
        val record = plan.component(component).tiling
        if (record != null) tiled = TiledComponent(record, DecoderStages())
    }

    override fun close(component: String) {
        tiled = null
    }

    override fun run(component: String, inputs: Map<String, NdTensor>): Map<String, NdTensor> {
        val geo = plan.config.geometry
        return when (component) {
            PipelineLoop.ENCODER -> linkedMapOf("latent" to encode(inputs.getValue("image"), geo))
            PipelineLoop.DENOISER -> {
                if (clip == failAt) throw IllegalStateException("stand-in failure in clip ${clip + 1}")
                val x = inputs.getValue("latent")
                val t = inputs.getValue("timestep").data[0]
                linkedMapOf("velocity" to NdTensor(FloatArray(x.data.size) { -x.data[it] / 2 + t / 1e5f }, x.shape))
            }
            else -> {
                val x = inputs.getValue("latent")
                val t = tiled
                linkedMapOf("video" to (t?.run(x) ?: NdTensor.of(decode(x.toTiled(), geo.frames))))
            }
        }
    }

    private fun encode(image: NdTensor, geo: VideoGeometry): NdTensor {
        val h = geo.latentH
        val w = geo.latentW
        val out = FloatArray(VideoGeometry.LATENT_CHANNELS * h * w)
        for (c in 0 until VideoGeometry.LATENT_CHANNELS) {
            for (y in 0 until h) for (x in 0 until w) {
                var s = 0.0f
                for (dy in 0 until 32) for (dx in 0 until 32) {
                    val r = Math.min(y * 32 + dy, geo.height - 1)
                    val q = Math.min(x * 32 + dx, geo.width - 1)
                    s += image.data[((c % 3) * geo.height + r) * geo.width + q]
                }
                out[(c * h + y) * w + x] = s / 1024 + c * 1e-3f
            }
        }
        return NdTensor(out, geo.refShape)
    }

    inner class DecoderStages : StageRunner {
        override fun run(stage: Int, index: Int, window: FloatTensor): FloatTensor =
            if (stage == 0) decode(window, plan.config.frames) else window  // later stages: identity
    }

    /** (1, 128, T, h, w) → (1, 3, F, 32h, 32w). */
    fun decode(x: FloatTensor, frames: Int): FloatTensor {
        val s = x.shape
        val h = s[3]
        val w = s[4]
        val out = FloatArray(3 * frames * 32 * h * 32 * w)
        var k = 0
        for (ch in 0 until 3) for (f in 0 until frames) {
            val t = Math.min((f + 7) / 8, s[2] - 1)
            for (y in 0 until 32 * h) for (q in 0 until 32 * w) {
                out[k++] = Math.tanh(x.data[((ch * s[2] + t) * h + y / 32) * w + q / 32].toDouble()).toFloat()
            }
        }
        return FloatTensor(out, intArrayOf(1, 3, frames, 32 * h, 32 * w))
    }
}
