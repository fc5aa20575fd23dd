package org.mi2v.bench

import java.io.File

// Writes a deterministic report through the app's own code path (Report.build + Json.write), with fixed numbers in
// place of ExecuTorch timings. tests/test_apps.py compiles this with kotlinc (when one is installed) and checks the
// file against the Python schema and statistics. Usage: SampleReportKt OUT.json [PLAN.json GOT.bin]: with a plan
// whose decoder has a `check` block, GOT.bin (raw float32) stands for the decoder's output in the output check.
fun main(args: Array<String>) {
    val out = File(if (args.isNotEmpty()) args[0] else "sample-report.json")
    val comps = ArrayList<ComponentData>()
    val base = mapOf("encoder" to 11.0, "denoiser" to 40.0, "decoder" to 23.0)
    for (name in COMPONENTS) {
        val b = base.getValue(name)
        val samples = ArrayList<Double>()
        for (i in 0 until 12) samples.add(b + (i * 7 % 5) * 0.25)
        val runtime = linkedMapOf<String, Any?>("name" to "executorch", "version" to "1.5.1", "runner" to RUNNER,
            "mode" to "app", "backend" to "xnnpack", "backends" to listOf("XnnpackBackend"), "inputs" to "ones")
        val artifact = linkedMapOf<String, Any?>("file" to "$name.pte", "path" to "/data/local/tmp/mi2v/app/$name.pte",
            "format" to "pte", "bytes" to 1234L, "delegate" to "xnnpack")
        comps.add(ComponentData(name, "ok", null, artifact, runtime,
            listOf(RunData(b * 3, samples, listOf(b * 2, b * 1.5), 204800L, "component", b * 2, "xnnpack", null)),
            if (args.size >= 3) sampleCheck(name, File(args[1]), File(args[2])) else null))
    }
    val device = linkedMapOf<String, Any?>("transport" to "adb", "simulated_device" to false, "model" to "JVM sample",
        "os" to "android", "sdk_int" to 35)
    val protocol = linkedMapOf<String, Any?>("warmup" to 2, "iterations" to 12, "runs" to 1,
        "timed_region" to "Module.execute", "mode" to "app", "runner" to RUNNER)
    val conditions = linkedMapOf<String, Any?>("before" to mapOf("thermal_status" to 0), "after" to mapOf("thermal_status" to 0))
    val tool = linkedMapOf<String, Any?>("name" to "mi2v-android-app", "version" to "0.1.0")
    val report = Report.build(device, protocol, conditions, 17, comps, listOf("quote \" and \\ survive"), tool,
        "2026-01-01T00:00:00Z")
    Report.writeAtomically(out, Json.write(report))
    println("wrote ${out.path}")
}

/** The output check of `name` from the plan's check block, with GOT.bin as the component's (only) output. */
fun sampleCheck(name: String, plan: File, got: File): Map<String, Any?>? {
    val spec = Args.parsePlan(plan.readText()).components.firstOrNull { it.component == name }?.check ?: return null
    val want = spec.expected.map { OutputCheck.readFloats(File(it.path), it.count()) }
    val outputs = listOf(OutputCheck.readFloats(got, spec.expected[0].count()))
    return OutputCheck.compare(outputs, want, spec.gate, "jvm-sample", spec.sets)
}
