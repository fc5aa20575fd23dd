package org.mi2v.bench

// Pure Kotlin (no Android, no ExecuTorch imports): the instrumentation arguments, the plan file, the statistics and
// the report's JSON form (schema mi2v.bench/1, as written by `mi2v bench`: mi2v_export/devices/report.py). Kept free
// of Android so that it compiles and runs on a plain JVM (`./gradlew testDebugUnitTest`, or kotlinc + java).
// Written for Kotlin 1.3+ (no APIs whose signatures changed since: max()/min(), lowercase(), Char.code, buildList).

import java.io.File
import java.text.SimpleDateFormat
import java.util.Date
import java.util.Locale
import java.util.TimeZone

const val SCHEMA = "mi2v.bench/1"
const val RUNNER = "android-app"
const val PERCENTILE_METHOD = "nearest-rank"
val COMPONENTS = listOf("encoder", "denoiser", "decoder")

/** Nearest-rank percentiles and the other summary numbers, computed as report.py computes them. */
object Stats {
    fun percentile(samples: List<Double>, q: Double): Double {
        require(samples.isNotEmpty()) { "no samples" }
        val ordered = samples.sorted()
        val rank = Math.max(1, Math.ceil(q / 100.0 * ordered.size).toInt())
        return ordered[Math.min(rank, ordered.size) - 1]
    }

    fun trimmedMean(samples: List<Double>, proportion: Double = 0.1): Double {
        val ordered = samples.sorted()
        val k = (ordered.size * proportion).toInt()
        val middle = if (ordered.size - 2 * k > 0) ordered.subList(k, ordered.size - k) else ordered
        return middle.sum() / middle.size
    }

    fun mean(samples: List<Double>): Double = samples.sum() / samples.size

    /** Sample standard deviation (n − 1); 0 for one sample. */
    fun stdev(samples: List<Double>): Double {
        if (samples.size < 2) return 0.0
        val m = mean(samples)
        var acc = 0.0
        for (s in samples) acc += (s - m) * (s - m)
        return Math.sqrt(acc / (samples.size - 1))
    }

    fun latency(samples: List<Double>): LinkedHashMap<String, Any?> {
        val out = LinkedHashMap<String, Any?>()
        out["n"] = samples.size
        if (samples.isEmpty()) return out
        val ordered = samples.sorted()
        out["min"] = ordered[0]
        out["p10"] = percentile(samples, 10.0)
        out["p50"] = percentile(samples, 50.0)
        out["p90"] = percentile(samples, 90.0)
        out["p99"] = percentile(samples, 99.0)
        out["max"] = ordered[ordered.size - 1]
        out["mean"] = mean(samples)
        out["stdev"] = stdev(samples)
        out["trimmed_mean_10"] = trimmedMean(samples, 0.1)
        return out
    }
}

/** One timed process-worth of a component: load, warm-up (discarded), timed iterations. */
class RunData(
    val loadMs: Double?,
    val samplesMs: List<Double>,
    val warmupMs: List<Double>,
    val peakRssKb: Long? = null,
    val peakRssScope: String? = null,
    val firstIterationMs: Double? = null,
    val backend: String? = null,
    val threads: Int? = null
) {
    fun toMap(): LinkedHashMap<String, Any?> {
        val m = LinkedHashMap<String, Any?>()
        m["load_ms"] = loadMs
        m["samples_ms"] = samplesMs
        m["warmup_ms"] = warmupMs
        m["peak_rss_kb"] = peakRssKb
        m["peak_rss_scope"] = peakRssScope
        m["peak_rss_method"] = if (peakRssKb != null) "in-process-vmhwm" else null
        m["exit_code"] = null
        m["first_iteration_ms"] = firstIterationMs
        m["backend"] = backend
        m["threads"] = threads
        m["log"] = null
        return m
    }
}

class ComponentData(
    val component: String,
    val status: String,
    val error: String?,
    val artifact: Map<String, Any?>,
    val runtime: Map<String, Any?>,
    val runs: List<RunData>,
    val outputCheck: Map<String, Any?>? = null
) {
    fun samples(): List<Double> {
        val all = ArrayList<Double>()
        for (r in runs) all.addAll(r.samplesMs)
        return all
    }

    fun medianMs(): Double? {
        val s = samples()
        return if (s.isNotEmpty() && status == "ok") Stats.percentile(s, 50.0) else null
    }

    fun summary(): LinkedHashMap<String, Any?> {
        val s = samples()
        val lat = Stats.latency(s)
        if (s.isNotEmpty()) {
            val medians = ArrayList<Double>()
            for (r in runs) if (r.samplesMs.isNotEmpty()) medians.add(Stats.percentile(r.samplesMs, 50.0))
            lat["run_medians"] = medians
        }
        val loads = ArrayList<Double>()
        for (r in runs) if (r.loadMs != null) loads.add(r.loadMs)
        val load = LinkedHashMap<String, Any?>()
        if (loads.isNotEmpty()) load["median"] = median(loads)
        var rss: Long? = null
        for (r in runs) if (r.peakRssKb != null && (rss == null || r.peakRssKb > rss)) rss = r.peakRssKb
        val out = LinkedHashMap<String, Any?>()
        out["latency_ms"] = lat
        out["load_ms"] = load
        out["peak_rss_kb"] = rss
        return out
    }

    fun toMap(): LinkedHashMap<String, Any?> {
        val m = LinkedHashMap<String, Any?>()
        m["component"] = component
        m["status"] = status
        m["error"] = error
        m["artifact"] = artifact
        m["runtime"] = runtime
        val rs = ArrayList<Any?>()
        for (r in runs) rs.add(r.toMap())
        m["runs"] = rs
        m["summary"] = summary()
        if (outputCheck != null) m["output_check"] = outputCheck
        return m
    }

    companion object {
        /** statistics.median: the middle value, or the mean of the two middle ones. */
        fun median(values: List<Double>): Double {
            val o = values.sorted()
            val n = o.size
            return if (n % 2 == 1) o[n / 2] else (o[n / 2 - 1] + o[n / 2]) / 2.0
        }
    }
}

object Report {
    /** As report.py: failed without any ok component, ok when all are ok, partial otherwise. */
    fun status(components: List<ComponentData>): String {
        var anyOk = false
        var allOk = true
        for (c in components) {
            if (c.status == "ok") anyOk = true else allOk = false
        }
        if (!anyOk) return "failed"
        return if (allOk) "ok" else "partial"
    }

    /** (encoder + steps × denoiser + decoder) medians / frames; null when a component is missing or failed. */
    fun perFrameMs(components: List<ComponentData>, frames: Int?, steps: Int): Double? {
        if (frames == null || frames <= 0) return null
        val parts = HashMap<String, Double>()
        for (name in COMPONENTS) {
            val c = components.firstOrNull { it.component == name } ?: return null
            parts[name] = c.medianMs() ?: return null
        }
        return (parts.getValue("encoder") + steps * parts.getValue("denoiser") + parts.getValue("decoder")) / frames
    }

    fun utcNow(): String {
        val f = SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ss'Z'", Locale.US)
        f.timeZone = TimeZone.getTimeZone("UTC")
        return f.format(Date())
    }

    fun build(
        device: Map<String, Any?>,
        protocol: Map<String, Any?>,
        conditions: Map<String, Any?>,
        frames: Int?,
        components: List<ComponentData>,
        warnings: List<String>,
        tool: Map<String, Any?>,
        createdUtc: String = utcNow(),
        steps: Int = 2
    ): LinkedHashMap<String, Any?> {
        val m = LinkedHashMap<String, Any?>()
        m["schema"] = SCHEMA
        m["created_utc"] = createdUtc
        m["status"] = status(components)
        val firstError = components.firstOrNull { it.error != null }?.error
        m["error"] = firstError
        m["tool"] = tool
        m["host"] = LinkedHashMap<String, Any?>()
        m["device"] = device
        val proto = LinkedHashMap<String, Any?>()
        proto["percentile_method"] = PERCENTILE_METHOD
        proto.putAll(protocol)
        m["protocol"] = proto
        m["conditions"] = conditions
        m["frames"] = frames
        val cs = ArrayList<Any?>()
        for (c in components) cs.add(c.toMap())
        m["components"] = cs
        val perFrame = LinkedHashMap<String, Any?>()
        perFrame["1"] = perFrameMs(components, frames, 1)
        perFrame["2"] = perFrameMs(components, frames, 2)
        m["per_frame_ms"] = perFrame
        val headline = perFrameMs(components, frames, steps)
        val h = LinkedHashMap<String, Any?>()
        h["steps"] = steps
        h["per_frame_ms"] = headline
        h["frames_per_s"] = if (headline != null && headline > 0) 1000.0 / headline else null
        m["headline"] = h
        m["warnings"] = warnings
        return m
    }

    /** Write next to the target and rename, so a reader never sees half a report. */
    fun writeAtomically(target: File, text: String) {
        val dir = target.absoluteFile.parentFile
        if (dir != null && !dir.isDirectory && !dir.mkdirs()) throw IllegalStateException("cannot create $dir")
        val tmp = File(dir, "." + target.name + ".tmp")
        tmp.writeText(text)
        if (!tmp.renameTo(target)) {
            target.delete()
            if (!tmp.renameTo(target)) throw IllegalStateException("cannot write $target")
        }
    }
}

class InputSpec(val name: String, val shape: List<Long>, val dtype: String)

/** A raw little-endian tensor file the host staged (apps/check_files.py). */
class TensorFile(val name: String, val path: String, val shape: List<Long>, val dtype: String) {
    fun count(): Int {
        var n = 1L
        for (d in shape) n *= d
        return n.toInt()
    }
}

/** The gate of mi2v verify (parity.Gate): metric "psnr_db" or "rel_l2", op ">=" or "<=". */
class Gate(val metric: String, val op: String, val threshold: Double) {
    fun passes(psnrDb: Double, relL2: Double, finite: Boolean): Boolean {
        val value = if (metric == "psnr_db") psnrDb else relL2
        if (!finite || value.isNaN()) return false
        return if (op == "<=") value <= threshold else value >= threshold
    }

    fun describe(): String =
        "$metric $op " + java.math.BigDecimal(threshold.toString()).stripTrailingZeros().toPlainString()
}

/** The plan's output check: the first test-vector set's inputs and expected outputs, and the gate. */
class CheckSpec(val inputs: List<TensorFile>, val expected: List<TensorFile>, val gate: Gate, val sets: Int)

class ComponentSpec(
    val component: String,
    val path: String,
    val method: String = "forward",
    val inputs: List<InputSpec>? = null,
    val artifact: Map<String, Any?> = LinkedHashMap(),
    val check: CheckSpec? = null
)

/** The output check's numbers, as parity.py computes them: PSNR = 20·log10(max|ref| / RMSE), rel L2 =
 *  ||y - ref|| / ||ref||, over all outputs together; NaN/Inf in the outputs counted as 0 and fail the gate. */
object OutputCheck {
    fun readFloats(file: File, count: Int): FloatArray {
        val buf = java.nio.ByteBuffer.wrap(file.readBytes()).order(java.nio.ByteOrder.LITTLE_ENDIAN)
        if (buf.remaining() != count * 4) {
            throw IllegalArgumentException("${file.name}: ${buf.remaining()} bytes, expected ${count * 4} (float32)")
        }
        val out = FloatArray(count)
        buf.asFloatBuffer().get(out)
        return out
    }

    fun compare(outputs: List<FloatArray>, expected: List<FloatArray>, gate: Gate, runtime: String,
                sets: Int): LinkedHashMap<String, Any?> {
        if (outputs.size != expected.size) {
            throw IllegalArgumentException("${outputs.size} outputs against ${expected.size} expected outputs")
        }
        var sq = 0.0
        var refSq = 0.0
        var peak = 0.0
        var maxAbs = 0.0
        var n = 0L
        var finite = true
        for (k in outputs.indices) {
            val y = outputs[k]
            val r = expected[k]
            if (y.size != r.size) throw IllegalArgumentException("output $k has ${y.size} values, expected ${r.size}")
            for (i in y.indices) {
                var v = y[i].toDouble()
                if (v.isNaN() || v.isInfinite()) {
                    finite = false
                    v = 0.0
                }
                val ref = r[i].toDouble()
                val d = v - ref
                sq += d * d
                refSq += ref * ref
                peak = Math.max(peak, Math.abs(ref))
                maxAbs = Math.max(maxAbs, Math.abs(d))
            }
            n += y.size
        }
        val rms = if (n > 0) Math.sqrt(sq / n) else 0.0
        val psnr = if (rms == 0.0) Double.POSITIVE_INFINITY
            else if (peak == 0.0) Double.NEGATIVE_INFINITY else 20.0 * Math.log10(peak / rms)
        val relL2 = if (refSq == 0.0) (if (sq == 0.0) 0.0 else Double.POSITIVE_INFINITY) else Math.sqrt(sq / refSq)
        val m = LinkedHashMap<String, Any?>()
        m["psnr_db"] = jsonNumber(psnr)
        m["rel_l2"] = jsonNumber(relL2)
        m["max_abs"] = jsonNumber(maxAbs)
        m["passed"] = gate.passes(psnr, relL2, finite)
        m["finite"] = finite
        m["sets"] = sets
        m["gate"] = gate.describe()
        m["runtime"] = runtime
        return m
    }

    /** Not-checked record: `{passed: null, reason}`. */
    fun notChecked(reason: String): LinkedHashMap<String, Any?> {
        val m = LinkedHashMap<String, Any?>()
        m["passed"] = null
        m["reason"] = reason
        return m
    }

    /** JSON has no inf/nan: as parity.py, write them as strings. */
    fun jsonNumber(v: Double): Any = when {
        v.isNaN() -> "nan"
        v == Double.POSITIVE_INFINITY -> "inf"
        v == Double.NEGATIVE_INFINITY -> "-inf"
        else -> v
    }
}

class Plan(val frames: Int?, val components: List<ComponentSpec>)

/** The instrumentation arguments (`am instrument -e key value`): all strings. */
object Args {
    /** Which component a file is, from its name (encoder / denoiser / decoder), or null. */
    fun componentFor(path: String): String? {
        val name = File(path).name
        return COMPONENTS.firstOrNull { name.contains(it) }
    }

    /** "encoder=/p/e.pte,denoiser=/p/d.pte" (or bare paths named after their component) → ordered pairs. */
    fun parseArtifacts(spec: String): List<Pair<String, String>> {
        val out = ArrayList<Pair<String, String>>()
        for (raw in spec.split(",")) {
            val item = raw.trim()
            if (item.length == 0) continue
            val eq = item.indexOf('=')
            val component: String
            val path: String
            if (eq > 0) {
                component = item.substring(0, eq).trim()
                path = item.substring(eq + 1).trim()
            } else {
                path = item
                component = componentFor(item)
                    ?: throw IllegalArgumentException("artifacts: cannot tell the component of $item; write component=path")
            }
            if (component !in COMPONENTS) {
                throw IllegalArgumentException("artifacts: unknown component '$component' (use ${COMPONENTS.joinToString(", ")})")
            }
            if (!path.endsWith(".pte")) throw IllegalArgumentException("artifacts: $path is not a .pte file")
            if (out.any { it.first == component }) throw IllegalArgumentException("artifacts: $component given twice")
            out.add(Pair(component, path))
        }
        if (out.isEmpty()) throw IllegalArgumentException("artifacts: no artifact given (-e artifacts encoder=/path.pte,…)")
        return out
    }

    fun intArg(value: String?, name: String, default: Int, min: Int): Int {
        if (value == null || value.length == 0) return default
        val n = value.trim().toIntOrNull() ?: throw IllegalArgumentException("$name: '$value' is not an integer")
        if (n < min) throw IllegalArgumentException("$name must be at least $min (got $n)")
        return n
    }

    /** A relative output path goes into the app's files folder (readable with `run-as PACKAGE cat files/…`). */
    fun resolveOutput(value: String?, filesDir: String): String {
        val name = if (value == null || value.length == 0) "mi2v-app-report.json" else value
        return if (name.startsWith("/")) name else File(filesDir, name).path
    }

    fun parsePlan(text: String): Plan {
        val root = JsonReader(text).parse() as? Map<*, *> ?: throw IllegalArgumentException("plan: not a JSON object")
        val schema = root["schema"]
        if (schema != "mi2v.app-plan/1") throw IllegalArgumentException("plan: schema $schema is not mi2v.app-plan/1")
        val frames = (root["frames"] as? Number)?.toInt()
        val comps = ArrayList<ComponentSpec>()
        val list = root["components"] as? List<*> ?: throw IllegalArgumentException("plan: no components list")
        for (item in list) {
            val c = item as? Map<*, *> ?: throw IllegalArgumentException("plan: a component is not an object")
            val name = c["component"] as? String ?: throw IllegalArgumentException("plan: a component has no name")
            val path = c["path"] as? String ?: throw IllegalArgumentException("plan: $name has no path")
            val method = c["method"] as? String ?: "forward"
            var inputs: ArrayList<InputSpec>? = null
            val rawInputs = c["inputs"] as? List<*>
            if (rawInputs != null) {
                inputs = ArrayList()
                for (i in rawInputs) {
                    val t = i as? Map<*, *> ?: throw IllegalArgumentException("plan: $name has a bad input entry")
                    val shape = ArrayList<Long>()
                    for (d in (t["shape"] as? List<*> ?: emptyList<Any>())) shape.add((d as Number).toLong())
                    inputs.add(InputSpec(t["name"] as? String ?: "input", shape, t["dtype"] as? String ?: "float32"))
                }
            }
            val artifact = LinkedHashMap<String, Any?>()
            val rawArtifact = c["artifact"] as? Map<*, *>
            if (rawArtifact != null) for ((k, v) in rawArtifact) artifact[k.toString()] = v
            comps.add(ComponentSpec(name, path, method, inputs, artifact, parseCheck(c["check"] as? Map<*, *>, name)))
        }
        return Plan(frames, comps)
    }

    /** The plan's `check` block (apps/check_files.py), or null when the host staged none. */
    fun parseCheck(c: Map<*, *>?, name: String): CheckSpec? {
        if (c == null) return null
        fun files(key: String): List<TensorFile> {
            val out = ArrayList<TensorFile>()
            for (i in c[key] as? List<*> ?: throw IllegalArgumentException("plan: $name check has no $key")) {
                val t = i as? Map<*, *> ?: throw IllegalArgumentException("plan: $name check has a bad $key entry")
                val shape = ArrayList<Long>()
                for (d in (t["shape"] as? List<*> ?: emptyList<Any>())) shape.add((d as Number).toLong())
                val path = t["path"] as? String ?: throw IllegalArgumentException("plan: $name check $key has no path")
                out.add(TensorFile(t["name"] as? String ?: "tensor", path, shape, t["dtype"] as? String ?: "float32"))
            }
            return out
        }
        val g = c["gate"] as? Map<*, *> ?: throw IllegalArgumentException("plan: $name check has no gate")
        val gate = Gate(g["metric"] as? String ?: "psnr_db", g["op"] as? String ?: ">=",
            (g["threshold"] as? Number ?: throw IllegalArgumentException("plan: $name gate has no threshold")).toDouble())
        return CheckSpec(files("inputs"), files("expected"), gate, (c["sets"] as? Number)?.toInt() ?: 1)
    }

    /** The components to time: the `artifacts` argument decides which and where; the plan adds input specs.
     *  Without `artifacts`, every component of the plan runs. */
    fun resolveComponents(artifacts: String?, plan: Plan?): List<ComponentSpec> {
        if (artifacts == null || artifacts.length == 0) {
            if (plan == null || plan.components.isEmpty()) {
                throw IllegalArgumentException("no artifacts: pass -e artifacts encoder=/path.pte,… (or -e plan)")
            }
            return plan.components
        }
        val out = ArrayList<ComponentSpec>()
        for ((component, path) in parseArtifacts(artifacts)) {
            val fromPlan = plan?.components?.firstOrNull { it.component == component }
            out.add(ComponentSpec(component, path, fromPlan?.method ?: "forward", fromPlan?.inputs,
                fromPlan?.artifact ?: LinkedHashMap(), fromPlan?.check))
        }
        return out
    }
}

/** A small JSON writer (2-space indent). Non-finite doubles become null (JSON has no NaN). */
object Json {
    fun write(value: Any?): String {
        val sb = StringBuilder()
        append(sb, value, 0)
        sb.append('\n')
        return sb.toString()
    }

    private fun indent(sb: StringBuilder, level: Int) {
        for (i in 0 until level) sb.append("  ")
    }

    private fun append(sb: StringBuilder, v: Any?, level: Int) {
        when (v) {
            null -> sb.append("null")
            is Boolean -> sb.append(if (v) "true" else "false")
            is Double -> sb.append(if (v.isNaN() || v.isInfinite()) "null" else v.toString())
            is Float -> append(sb, v.toDouble(), level)
            is Number -> sb.append(v.toLong().toString())
            is String -> quote(sb, v)
            is Map<*, *> -> {
                if (v.isEmpty()) {
                    sb.append("{}")
                    return
                }
                sb.append("{\n")
                var first = true
                for ((k, value) in v) {
                    if (!first) sb.append(",\n")
                    first = false
                    indent(sb, level + 1)
                    quote(sb, k.toString())
                    sb.append(": ")
                    append(sb, value, level + 1)
                }
                sb.append('\n')
                indent(sb, level)
                sb.append('}')
            }
            is Iterable<*> -> appendList(sb, v.toList(), level)
            is Array<*> -> appendList(sb, v.toList(), level)
            is DoubleArray -> appendList(sb, v.toList(), level)
            is LongArray -> appendList(sb, v.toList(), level)
            is IntArray -> appendList(sb, v.toList(), level)
            else -> quote(sb, v.toString())
        }
    }

    private fun appendList(sb: StringBuilder, items: List<Any?>, level: Int) {
        if (items.isEmpty()) {
            sb.append("[]")
            return
        }
        val scalar = items.all { it == null || it is Number || it is Boolean }
        if (scalar) {
            sb.append('[')
            for ((i, x) in items.withIndex()) {
                if (i > 0) sb.append(", ")
                append(sb, x, level)
            }
            sb.append(']')
            return
        }
        sb.append("[\n")
        for ((i, x) in items.withIndex()) {
            if (i > 0) sb.append(",\n")
            indent(sb, level + 1)
            append(sb, x, level + 1)
        }
        sb.append('\n')
        indent(sb, level)
        sb.append(']')
    }

    fun quote(sb: StringBuilder, s: String) {
        sb.append('"')
        for (c in s) {
            when (c) {
                '"' -> sb.append("\\\"")
                '\\' -> sb.append("\\\\")
                '\n' -> sb.append("\\n")
                '\r' -> sb.append("\\r")
                '\t' -> sb.append("\\t")
                '\b' -> sb.append("\\b")
                '\u000C' -> sb.append("\\f")
                else -> if (c < ' ') sb.append(String.format(Locale.US, "\\u%04x", c - '\u0000')) else sb.append(c)
            }
        }
        sb.append('"')
    }
}

/** A small JSON reader for the plan file: objects → LinkedHashMap, arrays → ArrayList, numbers → Long/Double. */
class JsonReader(private val text: String) {
    private var i = 0

    fun parse(): Any? {
        val v = value()
        skip()
        if (i != text.length) fail("trailing characters")
        return v
    }

    private fun fail(why: String): Nothing = throw IllegalArgumentException("JSON: $why at offset $i")

    private fun skip() {
        while (i < text.length && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t')) i++
    }

    private fun value(): Any? {
        skip()
        if (i >= text.length) fail("unexpected end")
        val c = text[i]
        return when {
            c == '{' -> obj()
            c == '[' -> arr()
            c == '"' -> str()
            c == 't' -> literal("true", true)
            c == 'f' -> literal("false", false)
            c == 'n' -> literal("null", null)
            c == '-' || (c in '0'..'9') -> num()
            else -> fail("unexpected '$c'")
        }
    }

    private fun literal(word: String, v: Any?): Any? {
        if (!text.startsWith(word, i)) fail("bad literal")
        i += word.length
        return v
    }

    private fun obj(): Map<String, Any?> {
        val m = LinkedHashMap<String, Any?>()
        i++
        skip()
        if (i < text.length && text[i] == '}') {
            i++
            return m
        }
        while (true) {
            skip()
            if (i >= text.length || text[i] != '"') fail("expected a key")
            val k = str()
            skip()
            if (i >= text.length || text[i] != ':') fail("expected ':'")
            i++
            m[k] = value()
            skip()
            if (i < text.length && text[i] == ',') {
                i++
                continue
            }
            if (i < text.length && text[i] == '}') {
                i++
                return m
            }
            fail("expected ',' or '}'")
        }
    }

    private fun arr(): List<Any?> {
        val a = ArrayList<Any?>()
        i++
        skip()
        if (i < text.length && text[i] == ']') {
            i++
            return a
        }
        while (true) {
            a.add(value())
            skip()
            if (i < text.length && text[i] == ',') {
                i++
                continue
            }
            if (i < text.length && text[i] == ']') {
                i++
                return a
            }
            fail("expected ',' or ']'")
        }
    }

    private fun str(): String {
        val sb = StringBuilder()
        i++
        while (i < text.length) {
            val c = text[i++]
            when (c) {
                '"' -> return sb.toString()
                '\\' -> {
                    if (i >= text.length) fail("bad escape")
                    val e = text[i++]
                    when (e) {
                        '"', '\\', '/' -> sb.append(e)
                        'n' -> sb.append('\n')
                        'r' -> sb.append('\r')
                        't' -> sb.append('\t')
                        'b' -> sb.append('\b')
                        'f' -> sb.append('\u000C')
                        'u' -> {
                            if (i + 4 > text.length) fail("bad \\u escape")
                            sb.append(Integer.parseInt(text.substring(i, i + 4), 16).toChar())
                            i += 4
                        }
                        else -> fail("bad escape")
                    }
                }
                else -> sb.append(c)
            }
        }
        fail("unterminated string")
    }

    private fun num(): Any {
        val start = i
        if (text[i] == '-') i++
        while (i < text.length && (text[i] in '0'..'9' || text[i] == '.' || text[i] == 'e' || text[i] == 'E' ||
                text[i] == '+' || text[i] == '-')) i++
        val s = text.substring(start, i)
        if (s.contains('.') || s.contains('e') || s.contains('E')) {
            return s.toDoubleOrNull() ?: fail("bad number $s")
        }
        return s.toLongOrNull() ?: (s.toDoubleOrNull() ?: fail("bad number $s"))
    }
}
