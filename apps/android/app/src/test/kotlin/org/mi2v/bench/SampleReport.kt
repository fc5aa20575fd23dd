package org.mi2v.bench

import java.io.File

// Writes a deterministic report through the app's own code path (Report.build + Json.write), with fixed numbers in
// place of ExecuTorch timings. tests/test_apps.py compiles this with kotlinc (when one is installed) and checks the
// file against the Python schema and statistics. Usage: SampleReportKt OUT.json
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
            listOf(RunData(b * 3, samples, listOf(b * 2, b * 1.5), 204800L, "component", b * 2, "xnnpack", null))))
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
