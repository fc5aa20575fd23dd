package org.mi2v.bench

// Pure Kotlin (no Android, no ExecuTorch imports): the `pipeline` block of the bench report for the whole
// image-to-video run timed inside the app, clip after clip. Its fields and arithmetic are the host's
// mi2v_export/devices/pipeline_bench.py (PipelineRun.add, block, _cold, _warm, _headline, _sustained, _stats) and
// the schema's `pipeline` / `pipeline_clip` (mi2v_export/schemas/bench-report.schema.json): nearest-rank
// percentiles (Stats.percentile, devices/report.py), means as statistics.fmean (an exactly rounded sum, `fsum`),
// `started_s` rounded as Python's round(x, 3). What the app cannot fill stays as the host leaves it for an
// in-process run: no device-reported times or transfers (the stage time is the device time), `psnr_db_min` and
// `quality` null (the host compares the video: devices/pipeline_bench.py `_quality`).
// tests/e2e/test_app_pipeline_bench.py compiles this with kotlinc and checks the block against PipelineRun's on the
// same clips. Kotlin 1.3+.

import java.io.File
import java.math.BigDecimal
import java.math.RoundingMode
import java.security.MessageDigest

/** One clip as measured: PipelineRun.add's inputs in ms. `timingsMs` has PipelineLoop.generate's keys
 *  (load_<component>, encode, denoise, decode, postprocess); `preprocessMs` is the app's own input preparation. */
class ClipTimes(val timingsMs: Map<String, Double>, val stepMs: List<Double>, val preprocessMs: Double,
                val totalMs: Double, val startedS: Double, val peakRssKb: Long?, val baselineRssKb: Long?,
                val memoryMethod: String?, val videoSha256: String, val before: Map<String, Any?>,
                val after: Map<String, Any?>)

/** What the block says about the run as a whole, besides its clips. */
class PipelineFacts(val steps: Int, val frames: Int, val seed: Long?, val image: String, val clipsRequested: Int,
                    val durationS: Double?, val elapsedS: Double?, val prepareMs: Double?, val stopped: String?)

object PipelineReport {
    const val FORMAT = 1
    const val MEMORY_RESET = "vmhwm-reset"  // runtimes/memory.py RESET: VmHWM reset before the clip
    const val MEMORY_PROCESS = "vmhwm-process"  // the reset was refused: the process's peak so far

    /** PipelineRun.add: one entry of `clips`. */
    fun clip(index: Int, t: ClipTimes, frames: Int): LinkedHashMap<String, Any?> {
        val loads = linkedMapOf<String, Any?>()
        for (c in COMPONENTS) loads[c] = t.timingsMs.getValue("load_$c")
        val stages = linkedMapOf<String, Any?>("encoder" to t.timingsMs.getValue("encode"),
            "denoiser" to t.timingsMs.getValue("denoise"), "decoder" to t.timingsMs.getValue("decode"))
        val post = t.timingsMs.getValue("postprocess")
        val accounted = t.preprocessMs + sum(loads.values) + sum(stages.values) + post
        val m = LinkedHashMap<String, Any?>()
        m["clip"] = index
        m["cold"] = index == 0
        m["started_s"] = round(t.startedS, 3)
        m["load_ms"] = loads
        m["stage_ms"] = stages
        m["step_ms"] = t.stepMs
        m["preprocess_ms"] = t.preprocessMs
        m["postprocess_ms"] = post
        for (key in listOf("device_ms", "device_load_ms", "device_peak_rss_kb", "transfer_ms")) {
            m[key] = LinkedHashMap<String, Any?>()
        }
        m["glue_ms"] = Math.max(t.totalMs - accounted, 0.0)
        m["total_ms"] = t.totalMs
        m["per_frame_ms"] = t.totalMs / frames
        m["first_frame_ms"] = t.totalMs - post
        m["peak_rss_kb"] = t.peakRssKb
        m["baseline_rss_kb"] = t.baselineRssKb
        m["memory_method"] = t.memoryMethod
        m["video_sha256"] = t.videoSha256
        m["psnr_db_min"] = null
        m["conditions"] = linkedMapOf<String, Any?>("before" to t.before, "after" to t.after)
        return m
    }

    /** PipelineRun.block: the report's `pipeline` block from the clip entries (`clip`). */
    fun block(clips: List<Map<String, Any?>>, f: PipelineFacts): LinkedHashMap<String, Any?> {
        val warm = if (clips.size > 1) clips.subList(1, clips.size) else clips
        val peaks = clips.mapNotNull { (it["peak_rss_kb"] as? Number)?.toLong() }.filter { it != 0L }
        val m = LinkedHashMap<String, Any?>()
        m["format"] = FORMAT
        m["steps"] = f.steps
        m["frames"] = f.frames
        m["seed"] = f.seed
        m["image"] = f.image
        m["clips_requested"] = f.clipsRequested
        m["duration_s"] = f.durationS
        m["elapsed_s"] = f.elapsedS
        m["clips"] = clips
        m["cold"] = cold(clips, f.prepareMs)
        m["warm"] = warm(warm, clips.size > 1)
        m["headline"] = headline(warm, clips.size > 1, f.steps, f.frames)
        m["peak_rss_kb"] = if (peaks.isEmpty()) null else peaks.reduce { a, b -> Math.max(a, b) }
        m["device_peak_rss_kb"] = null  // in the app's process: no separate device figure
        m["quality"] = null
        m["sustained"] = sustained(clips, f.durationS)
        m["partial"] = f.stopped != null || clips.size < f.clipsRequested
        m["stopped"] = f.stopped
        return m
    }

    /** PipelineRun._cold. */
    fun cold(clips: List<Map<String, Any?>>, prepareMs: Double?): LinkedHashMap<String, Any?>? {
        if (clips.isEmpty()) return null
        val first = clips[0]
        val stages = ms(first, "stage_ms")
        val m = LinkedHashMap<String, Any?>()
        m["prepare_ms"] = prepareMs
        m["total_ms"] = first["total_ms"]
        m["first_frame_ms"] = first["first_frame_ms"]
        m["load_ms"] = sum(ms(first, "load_ms").values)
        m["first_run_ms"] = linkedMapOf<String, Any?>("encoder" to stages["encoder"],
            "denoiser" to steps(first)[0], "decoder" to stages["decoder"])
        return m
    }

    /** pipeline_bench._warm: `real` false when only the cold clip ran (it stands in, counted as 0 warm clips). */
    fun warm(warm: List<Map<String, Any?>>, real: Boolean): LinkedHashMap<String, Any?>? {
        if (warm.isEmpty()) return null
        val m = LinkedHashMap<String, Any?>()
        m["clips"] = if (real) warm.size else 0
        m["total_ms"] = stats(warm.map { num(it, "total_ms") })
        m["per_frame_ms"] = stats(warm.map { num(it, "per_frame_ms") })
        m["first_frame_ms"] = stats(warm.map { num(it, "first_frame_ms") })
        for (key in listOf("stage_ms", "load_ms")) {
            val p = LinkedHashMap<String, Any?>()
            for (c in COMPONENTS) p[c] = p50(warm.map { ms(it, key).getValue(c) })
            m[key] = p
        }
        return m
    }

    /** PipelineRun._headline: measured per frame (warm p50) next to the one computed from each stage's p50, and
     *  what makes the difference (the app has no device-reported loads or transfers: those parts are 0). */
    fun headline(warm: List<Map<String, Any?>>, real: Boolean, steps: Int,
                 frames: Int): LinkedHashMap<String, Any?>? {
        if (warm.isEmpty()) return null
        val encoder = p50(warm.map { ms(it, "stage_ms").getValue("encoder") })
        val decoder = p50(warm.map { ms(it, "stage_ms").getValue("decoder") })
        val step = p50(warm.flatMap { steps(it) })
        val computed = (encoder + steps * step + decoder) / frames
        val measured = p50(warm.map { num(it, "total_ms") }) / frames
        val difference = linkedMapOf<String, Any?>(
            "load" to p50(warm.map { sum(ms(it, "load_ms").values) + sum(ms(it, "device_load_ms").values) }),
            "pre_post" to p50(warm.map { num(it, "preprocess_ms") + num(it, "postprocess_ms") }),
            "transfer" to p50(warm.map { sum(ms(it, "transfer_ms").values) }),
            "glue" to p50(warm.map { num(it, "glue_ms") }))
        return linkedMapOf("measured_per_frame_ms" to measured, "computed_per_frame_ms" to computed,
            "difference_ms_per_frame" to measured - computed, "difference_ms" to difference,
            "from" to if (real) "warm clips" else "the cold clip (only one clip ran)")
    }

    /** pipeline_bench._sustained: the last warm clip against the first, and the thermal status's rise. */
    fun sustained(clips: List<Map<String, Any?>>, durationS: Double?): LinkedHashMap<String, Any?>? {
        val warm = if (clips.size > 1) clips.subList(1, clips.size) else listOf()
        if (durationS == null && warm.size < 2) return null
        val drift = if (warm.size >= 2) num(warm[warm.size - 1], "total_ms") / num(warm[0], "total_ms") else null
        val signs = ArrayList<String>()
        val status = clips.map { ((it["conditions"] as Map<*, *>)["after"] as? Map<*, *>)?.get("thermal_status") }
            .map { (it as? Number)?.toLong() }
        val highest = status.map { it ?: 0L }.fold(0L) { a, b -> Math.max(a, b) }
        if (status.any { it != null } && highest > (status[0] ?: 0L)) signs.add("thermal status rose to $highest")
        if (drift != null && drift > 1.10) {
            signs.add("the last warm clip took ${BigDecimal(drift).setScale(2, RoundingMode.HALF_EVEN)}x the first")
        }
        return linkedMapOf("duration_s" to durationS, "clips" to clips.size, "drift" to drift,
            "throttled" to signs.isNotEmpty(), "signs" to signs)
    }

    /** pipeline_bench._stats. */
    fun stats(values: List<Double>): LinkedHashMap<String, Any?> {
        val ordered = values.sorted()
        return linkedMapOf("n" to values.size, "p50" to p50(values), "p95" to Stats.percentile(values, 95.0),
            "min" to ordered[0], "max" to ordered[ordered.size - 1], "mean" to fsum(values) / values.size)
    }

    /** The app's report: BenchCore's Report.build with no per-component results (the host derives them from the
     *  clips) and the `pipeline` block; its status from the clips (ok, partial when stopped early, failed). */
    fun report(device: Map<String, Any?>, protocol: Map<String, Any?>, conditions: Map<String, Any?>,
               block: Map<String, Any?>, warnings: List<String>, tool: Map<String, Any?>,
               createdUtc: String = Report.utcNow()): LinkedHashMap<String, Any?> {
        val frames = block["frames"] as Int
        val m = Report.build(device, protocol, conditions, frames, listOf(), warnings, tool, createdUtc,
            block["steps"] as Int)
        val clips = (block["clips"] as List<*>).size
        m["status"] = if (clips == 0) "failed" else if (block["partial"] == true) "partial" else "ok"
        m["error"] = block["stopped"]
        m["pipeline"] = block
        return m
    }

    private fun p50(values: List<Double>): Double = Stats.percentile(values, 50.0)

    /** Python's sum() over a dict's values: 0 + v1 + v2 + … in order. */
    private fun sum(values: Collection<Any?>): Double {
        var s = 0.0
        for (v in values) s += (v as Number).toDouble()
        return s
    }

    private fun num(m: Map<String, Any?>, key: String): Double = (m.getValue(key) as Number).toDouble()

    @Suppress("UNCHECKED_CAST")
    private fun ms(m: Map<String, Any?>, key: String): Map<String, Double> =
        (m.getValue(key) as Map<String, Any?>).mapValues { (it.value as Number).toDouble() }

    private fun steps(m: Map<String, Any?>): List<Double> = (m.getValue("step_ms") as List<*>).map {
        (it as Number).toDouble()
    }

    /** Python's round(x, ndigits): the double's exact value rounded half to even. */
    fun round(x: Double, digits: Int): Double = BigDecimal(x).setScale(digits, RoundingMode.HALF_EVEN).toDouble()

    /** math.fsum (CPython's msum: exact partial sums, then one correctly rounded result), for finite values. */
    fun fsum(values: List<Double>): Double {
        val partials = ArrayList<Double>()
        for (value in values) {
            var x = value
            var i = 0
            for (j in partials.indices) {
                var y = partials[j]
                if (Math.abs(x) < Math.abs(y)) {
                    val t = x
                    x = y
                    y = t
                }
                val hi = x + y
                val lo = y - (hi - x)
                if (lo != 0.0) partials[i++] = lo
                x = hi
            }
            while (partials.size > i) partials.removeAt(partials.size - 1)
            partials.add(x)
        }
        return roundPartials(partials)
    }

    private fun roundPartials(partials: List<Double>): Double {
        var n = partials.size
        if (n == 0) return 0.0
        var hi = partials[--n]
        var lo = 0.0
        while (n > 0) {
            val x = hi
            val y = partials[--n]
            hi = x + y
            lo = y - (hi - x)
            if (lo != 0.0) break
        }
        if (n > 0 && ((lo < 0.0 && partials[n - 1] < 0.0) || (lo > 0.0 && partials[n - 1] > 0.0))) {
            val y = lo * 2.0
            val x = hi + y
            if (y == x - hi) hi = x
        }
        return hi
    }
}

/** This process's memory from /proc/self/status (runtimes/memory.py's probe): VmHWM, VmRSS in kB. */
object ProcStatus {
    fun kb(field: String, status: File = File("/proc/self/status")): Long? = try {
        status.readLines().firstOrNull { it.startsWith("$field:") }?.split(Regex("\\s+"))?.getOrNull(1)?.toLongOrNull()
    } catch (e: Exception) {
        null
    }

    /** Reset VmHWM (5 → clear_refs); false where the kernel or the sandbox does not allow it. */
    fun resetPeak(): Boolean = try {
        File("/proc/self/clear_refs").writeText("5")
        true
    } catch (e: Exception) {
        false
    }
}

object Digest {
    /** hashlib.sha256(bytes).hexdigest(). */
    fun sha256Hex(bytes: ByteArray): String {
        val hex = "0123456789abcdef"
        val sb = StringBuilder()
        for (b in MessageDigest.getInstance("SHA-256").digest(bytes)) {
            val v = b.toInt() and 0xff
            sb.append(hex[v shr 4]).append(hex[v and 15])
        }
        return sb.toString()
    }
}
