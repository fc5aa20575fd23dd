package org.mi2v.bench

// Pure Kotlin (no Android, no ExecuTorch imports): the in-app pipeline benchmark's plan and its clip loop, what
// `mi2v bench --pipeline --device adb:SERIAL --via app` stages and asks for (mi2v_export/apps/android_pipeline.py).
// The plan is the app's usual plan file (`mi2v.app-plan/1`, BenchCore.kt Args.parsePlan) with a `pipeline` block
// (the video size, steps, flow score, posterior mode, seed and image name of the host's run) and, per component,
// its output names and, for a tiled encoder / decoder, its `tiling` record with the stage files as phone paths.
// The loop is devices/pipeline_bench.py's `_clips`: clips back to back (at least `clips`; with a duration until it
// has passed and at least two ran), each PipelineLoop.generate on the host's image tensor and noise draw through a
// ComponentRunner (ExecuTorch in the app: EtPipeline.kt), timed and summarised by PipelineReport.kt; a failure
// keeps the clips done. Each distinct video's uint8 frames are written once, `<prefix>-<sha256[:16]>.u8`, for the
// host to compare with PyTorch fp32. tests/e2e/test_app_pipeline_bench.py runs it on the JVM. Kotlin 1.3+.

import java.io.File

/** One component as the pipeline runs it: its `.pte` (stage 0's for a tiled one), the method, its input and output
 *  names in the program's order (the manifest's), and its tiling record (null: one program). */
class PipelineComponent(val component: String, val path: String, val method: String, val inputs: List<String>,
                        val outputs: List<String>, val tiling: TilingRecord?)

class PipelinePlan(val config: GenerateConfig, val seed: Long?, val image: String,
                   val components: Map<String, PipelineComponent>) {
    fun component(name: String): PipelineComponent =
        components[name] ?: throw IllegalArgumentException("plan: no $name for the pipeline")

    companion object {
        /** The plan file's text (BenchCore.kt JsonReader); IllegalArgumentException naming what is wrong. */
        fun parse(text: String): PipelinePlan {
            val root = JsonReader(text).parse() as? Map<*, *> ?: throw IllegalArgumentException("plan: not a JSON object")
            if (root["schema"] != "mi2v.app-plan/1") {
                throw IllegalArgumentException("plan: schema ${root["schema"]} is not mi2v.app-plan/1")
            }
            val p = root["pipeline"] as? Map<*, *> ?: throw IllegalArgumentException("plan: no pipeline block")
            val config = GenerateConfig(int(p, "height"), int(p, "width"), int(p, "frames"), int(p, "steps"),
                (p["flow_score"] as? Number)?.toDouble() ?: PipelineLoop.DEFAULT_FLOW_SCORE,
                p["posterior"] as? String ?: "mean")
            val components = LinkedHashMap<String, PipelineComponent>()
            for (item in root["components"] as? List<*> ?: throw IllegalArgumentException("plan: no components")) {
                val c = item as? Map<*, *> ?: throw IllegalArgumentException("plan: a component is not an object")
                val name = c["component"] as? String ?: throw IllegalArgumentException("plan: a component has no name")
                val tiling = c["tiling"] as? Map<*, *>
                components[name] = PipelineComponent(name, c["path"] as? String
                    ?: throw IllegalArgumentException("plan: $name has no path"), c["method"] as? String ?: "forward",
                    names(c, "inputs", name), names(c, "outputs", name),
                    if (tiling == null) null else TilingJson.parse(tiling))
            }
            for (name in COMPONENTS) if (name !in components) throw IllegalArgumentException("plan: no $name")
            return PipelinePlan(config, (p["seed"] as? Number)?.toLong(), p["image"] as? String ?: "image",
                components)
        }

        private fun int(m: Map<*, *>, key: String): Int =
            (m[key] as? Number ?: throw IllegalArgumentException("plan: pipeline has no number '$key'")).toInt()

        private fun names(c: Map<*, *>, key: String, name: String): List<String> {
            val list = c[key] as? List<*> ?: throw IllegalArgumentException("plan: $name has no $key")
            return list.map {
                (it as? Map<*, *>)?.get("name") as? String ?: throw IllegalArgumentException("plan: $name $key: no name")
            }
        }
    }
}

/** What the clips need besides the runner: the plan, the staged image tensor (1, 3, 1, H, W) and noise draw
 *  (1, 128, T, h, w) as raw little-endian float32, how many clips (and for how long), where videos go (null: none). */
class ClipsRequest(val plan: PipelinePlan, val image: File, val noise: File, val clips: Int, val durationS: Double?,
                   val videoPrefix: File?)

/** The clips measured: the report's `pipeline` block (PipelineReport.block) and the videos written, by sha256. */
class ClipsRun(val block: LinkedHashMap<String, Any?>, val videos: Map<String, File>)

object PipelineClips {
    /** Clips back to back; `snapshot` gives the device's state (thermal status, battery) before and after each,
     *  `describe` the one line a failure is recorded as. */
    fun run(req: ClipsRequest, runner: ComponentRunner, snapshot: () -> Map<String, Any?>,
            log: (String) -> Unit = {}, describe: (Throwable) -> String = { "${it.javaClass.simpleName}: ${it.message}" }
    ): ClipsRun {
        val config = req.plan.config
        val t0 = System.nanoTime()
        val noise = readTensor(req.noise, config.geometry.latentShape)
        val prepareMs = (System.nanoTime() - t0) / 1e6
        val least = if (req.durationS == null) req.clips else Math.max(req.clips, 2)
        val clips = ArrayList<LinkedHashMap<String, Any?>>()
        val videos = LinkedHashMap<String, File>()
        var stopped: String? = null
        val start = System.nanoTime()
        while (true) {
            val elapsed = (System.nanoTime() - start) / 1e9
            if (clips.size >= least && (req.durationS == null || elapsed >= req.durationS)) break
            try {
                val t = oneClip(req, noise, runner, elapsed, snapshot, videos)
                clips.add(PipelineReport.clip(clips.size, t, config.frames))
                log("clip ${clips.size}: ${"%.0f".format(t.totalMs)} ms")
            } catch (t: Throwable) {
                stopped = describe(t)
                log("clip ${clips.size + 1} failed: $stopped")
                break
            }
        }
        val facts = PipelineFacts(config.steps, config.frames, req.plan.seed, req.plan.image, req.clips, req.durationS,
            (System.nanoTime() - start) / 1e9, prepareMs, stopped)
        return ClipsRun(PipelineReport.block(clips, facts), videos)
    }

    /** One clip: the image tensor read (the app's preprocessing), PipelineLoop.generate, the frames' sha256 and,
     *  for a video not seen before, its frames written (after the timed region). */
    fun oneClip(req: ClipsRequest, noise: NdTensor, runner: ComponentRunner, startedS: Double,
                snapshot: () -> Map<String, Any?>, videos: MutableMap<String, File>): ClipTimes {
        val config = req.plan.config
        val before = snapshot()
        val method = if (ProcStatus.resetPeak()) PipelineReport.MEMORY_RESET else PipelineReport.MEMORY_PROCESS
        val baseline = ProcStatus.kb("VmRSS")
        val t0 = System.nanoTime()
        val image = readTensor(req.image, intArrayOf(1, 3, 1, config.height, config.width))
        val preprocessMs = (System.nanoTime() - t0) / 1e6
        val run = PipelineLoop.generate(image, noise, config, runner)
        val totalMs = (System.nanoTime() - t0) / 1e6
        val peak = ProcStatus.kb("VmHWM")
        val after = snapshot()
        val digest = Digest.sha256Hex(run.frames)
        val prefix = req.videoPrefix
        if (prefix != null && digest !in videos) {
            val file = File(prefix.path + "-" + digest.substring(0, 16) + ".u8")
            writeAtomically(file, run.frames)
            videos[digest] = file
        }
        return ClipTimes(run.timingsMs, run.stepMs, preprocessMs, totalMs, startedS, peak, baseline,
            if (peak == null) null else method, digest, before, after)
    }

    /** Next to the target, then renamed: the host never pulls half a video. */
    fun writeAtomically(target: File, bytes: ByteArray) {
        val tmp = File(target.absoluteFile.parentFile, "." + target.name + ".tmp")
        tmp.writeBytes(bytes)
        if (!tmp.renameTo(target) && !(target.delete() && tmp.renameTo(target))) {
            throw IllegalStateException("cannot write $target")
        }
    }

    /** A staged raw little-endian float32 file as a tensor of `shape`. */
    fun readTensor(file: File, shape: IntArray): NdTensor =
        NdTensor(OutputCheck.readFloats(file, FloatTensor.product(shape)), shape)
}
