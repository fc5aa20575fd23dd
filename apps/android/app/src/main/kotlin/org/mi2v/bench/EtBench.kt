package org.mi2v.bench

import java.io.File
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/**
 * Times one component with ExecuTorch's Android library: per run, Module.load (mmap) + loadMethod is the load time,
 * then `warmup` discarded and `iterations` timed calls of Module.execute in the same process. Inputs are tensors of
 * ones built once, before timing, from the plan's shapes; without shapes (or for a dtype the Java API cannot make,
 * such as float16) no inputs are passed and ExecuTorch fills the method's inputs with ones itself — as the portable
 * executor_runner does — and the report says "runtime-ones".
 */
object EtBench {
    fun run(spec: ComponentSpec, warmup: Int, iterations: Int, runs: Int, log: (String) -> Unit): ComponentData {
        val file = File(spec.path)
        val artifact = LinkedHashMap<String, Any?>(spec.artifact)
        artifact["path"] = spec.path
        artifact["format"] = "pte"
        artifact["bytes"] = if (file.isFile) file.length() else null
        val runtime = LinkedHashMap<String, Any?>()
        runtime["name"] = "executorch"
        runtime["version"] = BuildConfig.EXECUTORCH_VERSION
        runtime["library"] = BuildConfig.EXECUTORCH_ARTIFACT
        runtime["runner"] = RUNNER
        runtime["mode"] = "app"
        runtime["log_channel"] = "app"
        runtime["method"] = spec.method
        if (!file.isFile) {
            return ComponentData(spec.component, "failed", "${spec.path} does not exist on the phone (push it first)",
                artifact, runtime, listOf())
        }
        if (!file.canRead()) {
            return ComponentData(spec.component, "failed", "the app cannot read ${spec.path} (permission denied): " +
                "push artifacts under /data/local/tmp and make them world-readable", artifact, runtime, listOf())
        }
        val inputs = makeInputs(spec.inputs)
        runtime["inputs"] = if (inputs != null) "ones" else "runtime-ones"
        val done = ArrayList<RunData>()
        for (r in 0 until runs) {
            log("${spec.component}: run ${r + 1}/$runs, $warmup warm-up + $iterations timed iterations")
            try {
                done.add(oneRun(spec, warmup, iterations, inputs ?: arrayOf(), runtime))
            } catch (t: Throwable) {
                return ComponentData(spec.component, "failed", describe(t), artifact, runtime, done)
            }
        }
        val check = if (spec.check == null) null else outputCheck(spec, spec.check, runtime)
        return ComponentData(spec.component, "ok", null, artifact, runtime, done, check)
    }

    /** Run once more, untimed, on the host's test-vector inputs and compare with the expected outputs
     *  (OutputCheck in BenchCore.kt); a failure to run or read is `{passed: null, reason}`. */
    fun outputCheck(spec: ComponentSpec, check: CheckSpec, runtime: Map<String, Any?>): Map<String, Any?> {
        val name = "executorch-app/" + (runtime["backend"] ?: "portable")
        return try {
            val inputs = ArrayList<EValue>()
            for (t in check.inputs) inputs.add(EValue.from(rawTensor(t) ?: return OutputCheck.notChecked(
                "input ${t.name} is ${t.dtype}: the ExecuTorch Java Tensor API cannot build it")))
            val module = Module.load(spec.path, Module.LOAD_MODE_MMAP)
            val outputs = try {
                module.execute(spec.method, *inputs.toTypedArray())
            } finally {
                module.destroy()
            }
            if (outputs.size < check.expected.size) {
                return OutputCheck.notChecked("${outputs.size} outputs, ${check.expected.size} expected")
            }
            val got = ArrayList<FloatArray>()
            for (k in check.expected.indices) got.add(outputs[k].toTensor().dataAsFloatArray)
            val want = check.expected.map { OutputCheck.readFloats(File(it.path), it.count()) }
            OutputCheck.compare(got, want, check.gate, name, check.sets)
        } catch (t: Throwable) {
            OutputCheck.notChecked("the check run failed: " + describe(t))
        }
    }

    /** A staged raw little-endian input file as a Tensor of its dtype; null for a dtype Java cannot build. */
    private fun rawTensor(t: TensorFile): Tensor? {
        val buf = java.nio.ByteBuffer.wrap(File(t.path).readBytes()).order(java.nio.ByteOrder.LITTLE_ENDIAN)
        val shape = t.shape.toLongArray()
        val n = t.count()
        return when (t.dtype) {
            "float32" -> { val a = FloatArray(n); buf.asFloatBuffer().get(a); Tensor.fromBlob(a, shape) }
            "float64" -> { val a = DoubleArray(n); buf.asDoubleBuffer().get(a); Tensor.fromBlob(a, shape) }
            "int64" -> { val a = LongArray(n); buf.asLongBuffer().get(a); Tensor.fromBlob(a, shape) }
            "int32" -> { val a = IntArray(n); buf.asIntBuffer().get(a); Tensor.fromBlob(a, shape) }
            else -> null
        }
    }

    private fun oneRun(spec: ComponentSpec, warmup: Int, iterations: Int, inputs: Array<EValue>,
                       runtime: LinkedHashMap<String, Any?>): RunData {
        val scoped = DeviceFacts.resetPeak()
        val t0 = System.nanoTime()
        val module = Module.load(spec.path, Module.LOAD_MODE_MMAP)
        try {
            // loadMethod returns an error code in the Java API (≤ 1.x) and throws in the Kotlin one: handle both.
            val rc: Any? = module.loadMethod(spec.method)
            if (rc is Int && rc != 0) {
                throw IllegalStateException("loading method ${spec.method} failed with ExecuTorch error 0x" +
                    Integer.toHexString(rc))
            }
            val loadMs = (System.nanoTime() - t0) / 1e6
            val backends = try {
                module.getMethodMetadata(spec.method).backends.toList()
            } catch (t: Throwable) {
                listOf<String>()
            }
            runtime["backends"] = backends
            val backend = when {
                backends.contains("VulkanBackend") -> "vulkan"
                backends.contains("XnnpackBackend") -> "xnnpack"
                backends.contains("QnnBackend") -> "qnn"
                backends.isEmpty() -> "portable"
                else -> backends[0]
            }
            runtime["backend"] = backend
            val warm = ArrayList<Double>()
            val samples = ArrayList<Double>()
            for (i in 0 until warmup + iterations) {
                val s = System.nanoTime()
                val outputs = module.execute(spec.method, *inputs)
                val ms = (System.nanoTime() - s) / 1e6
                if (outputs.isEmpty()) throw IllegalStateException("${spec.method} returned no outputs")
                if (i < warmup) warm.add(ms) else samples.add(ms)
            }
            val first = if (warm.isNotEmpty()) warm[0] else samples.firstOrNull()
            return RunData(loadMs, samples, warm, DeviceFacts.vmHwmKb(), if (scoped) "component" else "process",
                first, backend, null)
        } finally {
            module.destroy()
        }
    }

    /** Tensors of ones for the plan's inputs; null when there is no plan or a dtype has no Java constructor. */
    fun makeInputs(specs: List<InputSpec>?): Array<EValue>? {
        if (specs == null) return null
        val out = ArrayList<EValue>()
        for (spec in specs) {
            val shape = spec.shape.toLongArray()
            var n = 1L
            for (d in shape) n *= d
            if (n > Int.MAX_VALUE) return null
            val count = n.toInt()
            val tensor: Tensor = when (spec.dtype) {
                "float32", "float" -> Tensor.fromBlob(FloatArray(count) { 1f }, shape)
                "float64", "double" -> Tensor.fromBlob(DoubleArray(count) { 1.0 }, shape)
                "int64", "long" -> Tensor.fromBlob(LongArray(count) { 1L }, shape)
                "int32", "int" -> Tensor.fromBlob(IntArray(count) { 1 }, shape)
                "int8" -> Tensor.fromBlob(ByteArray(count) { 1 }, shape)
                "uint8" -> Tensor.fromBlobUnsigned(ByteArray(count) { 1 }, shape)
                else -> return null
            }
            out.add(EValue.from(tensor))
        }
        return out.toTypedArray()
    }

    /** One line: the exception, plus the ExecuTorch log lines that name the cause (e.g. a missing backend). */
    fun describe(t: Throwable): String {
        val base = "${t.javaClass.simpleName}: ${t.message ?: "no message"}".lines().first()
        val hints = try {
            (Module.readLogBufferStatic() ?: arrayOf()).filter {
                it.contains("is not registered") || it.contains("failed with status") || it.contains("Error")
            }.takeLast(2)
        } catch (e: Throwable) {
            listOf<String>()
        }
        return if (hints.isEmpty()) base else base + " [ExecuTorch: " + hints.joinToString(" | ") { it.trim() } + "]"
    }
}
