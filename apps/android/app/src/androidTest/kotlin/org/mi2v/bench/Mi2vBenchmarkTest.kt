package org.mi2v.bench

import android.app.Instrumentation
import android.os.Bundle
import android.util.Log
import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import java.io.File
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith

/**
 * The benchmark, run by `am instrument` (what `mi2v bench --device adb:SERIAL --via app` sends):
 *
 *   adb shell am instrument -w -r \
 *     -e artifacts encoder=/data/local/tmp/mi2v/app/encoder.pte,denoiser=…,decoder=… \
 *     -e iterations 20 -e warmup 3 [-e runs 1] [-e output mi2v-app-report.json] [-e plan …/plan.json] \
 *     -e class org.mi2v.bench.Mi2vBenchmarkTest org.mi2v.bench.test/androidx.test.runner.AndroidJUnitRunner
 *
 * Writes a mi2v.bench/1 report (relative output → the app's files folder; read it with
 * `adb shell run-as org.mi2v.bench cat files/mi2v-app-report.json`) and sends its path as the instrumentation
 * status `mi2v_report`. A component that fails to load or run is recorded as failed in the report; the test
 * itself fails only when its arguments are wrong or the report cannot be written.
 *
 * With `-e pipeline true` it times the whole image-to-video run instead (what `mi2v bench --pipeline --via app`
 * sends: mi2v_export/apps/android_pipeline.py): `-e plan` (with its `pipeline` block, PipelineClips.kt), `-e image`
 * and `-e noise` (the host's image tensor and noise draw, raw float32), `-e clips N` (3) [`-e duration S`],
 * `-e video PREFIX` (relative → the files folder; each distinct video's frames, `PREFIX-<sha256[:16]>.u8`). The
 * report then has no components and a `pipeline` block (PipelineReport.kt).
 */
@RunWith(AndroidJUnit4::class)
class Mi2vBenchmarkTest {
    @Test
    fun benchmark() {
        val instrumentation = InstrumentationRegistry.getInstrumentation()
        val args: Bundle = InstrumentationRegistry.getArguments()
        val context = instrumentation.targetContext
        if (args.getString("pipeline") == "true") {
            pipeline(instrumentation, args)
            return
        }
        val iterations = Args.intArg(args.getString("iterations"), "iterations", 20, 1)
        val warmup = Args.intArg(args.getString("warmup"), "warmup", 3, 0)
        val runs = Args.intArg(args.getString("runs"), "runs", 1, 1)
        val planPath = args.getString("plan")
        val plan = if (planPath.isNullOrEmpty()) null else Args.parsePlan(File(planPath).readText())
        val components = Args.resolveComponents(args.getString("artifacts"), plan)
        val output = Args.resolveOutput(args.getString("output"), context.filesDir.absolutePath)
        val frames = plan?.frames ?: args.getString("frames")?.toIntOrNull()

        val warnings = ArrayList<String>()
        val before = DeviceFacts.snapshot(context)
        val results = ArrayList<ComponentData>()
        for (spec in components) {
            results.add(EtBench.run(spec, warmup, iterations, runs) { Log.i(TAG, it) })
        }
        val after = DeviceFacts.snapshot(context)
        val b = before["thermal_status"] as? Int
        val a = after["thermal_status"] as? Int
        if (a != null && b != null && a > b) warnings.add("thermal status rose from $b to $a during the run")
        if (results.any { it.runtime["inputs"] == "runtime-ones" }) {
            warnings.add("some inputs were filled by ExecuTorch inside the timed call (no shapes, or a dtype the " +
                "Java Tensor API cannot build)")
        }

        val protocol = linkedMapOf<String, Any?>(
            "warmup" to warmup, "iterations" to iterations, "runs" to runs, "timed_region" to "Module.execute",
            "mode" to "app", "runner" to RUNNER, "threads" to null
        )
        val conditions = linkedMapOf<String, Any?>("before" to before, "after" to after)
        val report = Report.build(DeviceFacts.device(context), protocol, conditions, frames, results, warnings, tool())
        send(instrumentation, report, File(output))
    }

    /** `-e pipeline true`: the clips of the whole run (EtPipeline.kt), their report and the videos. */
    private fun pipeline(instrumentation: Instrumentation, args: Bundle) {
        val context = instrumentation.targetContext
        val files = context.filesDir.absolutePath
        val planPath = args.getString("plan") ?: throw IllegalArgumentException("pipeline: -e plan is required")
        val plan = PipelinePlan.parse(File(planPath).readText())
        val clips = Args.intArg(args.getString("clips"), "clips", 3, 1)
        val duration = args.getString("duration")?.let {
            it.toDoubleOrNull() ?: throw IllegalArgumentException("duration: '$it' is not a number")
        }
        val image = File(args.getString("image") ?: throw IllegalArgumentException("pipeline: -e image is required"))
        val noise = File(args.getString("noise") ?: throw IllegalArgumentException("pipeline: -e noise is required"))
        val prefix = File(Args.resolveOutput(args.getString("video") ?: VIDEO_PREFIX, files))
        prefix.absoluteFile.parentFile?.listFiles()?.filter {
            it.name.startsWith(prefix.name + "-") && it.name.endsWith(".u8")
        }?.forEach { it.delete() }  // no stale video from an earlier run
        val before = DeviceFacts.snapshot(context)
        val run = EtPipeline.run(ClipsRequest(plan, image, noise, clips, duration, prefix),
            { DeviceFacts.snapshot(context) }) { Log.i(TAG, it) }
        val after = DeviceFacts.snapshot(context)
        val protocol = linkedMapOf<String, Any?>(
            "mode" to "pipeline", "runner" to RUNNER, "timed_region" to "PipelineLoop.generate",
            "steps" to plan.config.steps, "clips" to clips, "duration_s" to duration, "seed" to plan.seed,
            "posterior" to plan.config.posterior, "inputs" to "image tensor and noise staged by the host"
        )
        val warnings = ArrayList<String>()
        val b = before["thermal_status"] as? Int
        val a = after["thermal_status"] as? Int
        if (a != null && b != null && a > b) warnings.add("thermal status rose from $b to $a during the run")
        val report = PipelineReport.report(DeviceFacts.device(context), protocol,
            linkedMapOf("before" to before, "after" to after), run.block, warnings, tool())
        send(instrumentation, report, File(Args.resolveOutput(args.getString("output"), files)))
    }

    private fun tool(): LinkedHashMap<String, Any?> = linkedMapOf(
        "name" to "mi2v-android-app", "version" to BuildConfig.VERSION_NAME,
        "executorch" to BuildConfig.EXECUTORCH_ARTIFACT + ":" + BuildConfig.EXECUTORCH_VERSION
    )

    /** Write the report and send its path as the instrumentation status `mi2v_report`. */
    private fun send(instrumentation: Instrumentation, report: Map<String, Any?>, out: File) {
        Report.writeAtomically(out, Json.write(report))
        Log.i(TAG, "report: ${out.absolutePath} (${report["status"]})")
        val status = Bundle()
        status.putString("mi2v_report", out.absolutePath)
        status.putString("mi2v_status", report["status"] as String)
        instrumentation.sendStatus(STATUS_REPORT, status)
        assertTrue("the report was not written to ${out.path}", out.isFile)
    }

    companion object {
        const val TAG = "Mi2vBench"
        const val VIDEO_PREFIX = "mi2v-app-video"
        const val STATUS_REPORT = 2 // AndroidJUnitRunner uses 1, 0 and negative codes for test start/end
    }
}
