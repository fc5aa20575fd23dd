package org.mi2v.bench

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import java.io.File

// JVM tests of the Android-free part of the app (./gradlew testDebugUnitTest).
class BenchCoreTest {
    private val samples = listOf(5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 6.0, 7.0, 9.0, 8.0)

    @Test
    fun nearestRankPercentiles() {
        assertEquals(1.0, Stats.percentile(samples, 10.0), 0.0)
        assertEquals(5.0, Stats.percentile(samples, 50.0), 0.0)
        assertEquals(9.0, Stats.percentile(samples, 90.0), 0.0)
        assertEquals(10.0, Stats.percentile(samples, 99.0), 0.0)
        assertEquals(1.0, Stats.percentile(samples, 0.0), 0.0)
    }

    @Test
    fun summaryNumbers() {
        val lat = Stats.latency(samples)
        assertEquals(10, lat["n"])
        assertEquals(5.5, lat["mean"] as Double, 1e-12)
        assertEquals(3.0276503540974917, lat["stdev"] as Double, 1e-12)
        assertEquals(5.5, lat["trimmed_mean_10"] as Double, 1e-12)
        assertEquals(0.0, Stats.stdev(listOf(3.0)), 0.0)
    }

    @Test
    fun artifactsArgument() {
        val a = Args.parseArtifacts("encoder=/data/local/tmp/mi2v/app/e.pte, /x/denoiser.pte")
        assertEquals(listOf(Pair("encoder", "/data/local/tmp/mi2v/app/e.pte"), Pair("denoiser", "/x/denoiser.pte")), a)
        for (bad in listOf("", "vae=/a.pte", "/x/unknown.pte", "encoder=/a.onnx", "encoder=/a.pte,encoder=/b.pte")) {
            try {
                Args.parseArtifacts(bad)
                fail("accepted '$bad'")
            } catch (expected: IllegalArgumentException) {
            }
        }
        assertEquals(20, Args.intArg(null, "iterations", 20, 1))
        assertEquals(7, Args.intArg(" 7", "iterations", 20, 1))
        assertEquals("/files/mi2v-app-report.json", Args.resolveOutput(null, "/files"))
        assertEquals("/sdcard/r.json", Args.resolveOutput("/sdcard/r.json", "/files"))
    }

    @Test
    fun planAddsInputShapes() {
        val plan = Args.parsePlan("""{"schema": "mi2v.app-plan/1", "frames": 17, "components": [
            {"component": "denoiser", "path": "/d/denoiser.pte", "method": "forward",
             "inputs": [{"name": "latent", "shape": [1, 128, 3, 4, 4], "dtype": "float32"}],
             "artifact": {"file": "denoiser.pte", "delegate": "xnnpack", "bytes": 123}}]}""")
        assertEquals(17, plan.frames)
        val comps = Args.resolveComponents("denoiser=/d/denoiser.pte", plan)
        assertEquals(listOf(1L, 128L, 3L, 4L, 4L), comps[0].inputs!![0].shape)
        assertEquals("xnnpack", comps[0].artifact["delegate"])
        assertNull(Args.resolveComponents("encoder=/d/encoder.pte", plan)[0].inputs)
    }

    @Test
    fun jsonRoundTrip() {
        val m = LinkedHashMap<String, Any?>()
        m["s"] = "quote\" back\\ nl\n tab\t ctl\u0001 é"
        m["n"] = listOf(1, 2.5, null, Double.NaN)
        m["nested"] = mapOf("empty" to emptyList<Any>(), "t" to true)
        val text = Json.write(m)
        assertTrue(text.contains("\\u0001"))
        val back = JsonReader(text).parse() as Map<*, *>
        assertEquals(m["s"], back["s"])
        assertEquals(listOf(1L, 2.5, null, null), back["n"])
    }

    @Test
    fun reportStatusAndHeadline() {
        val run = RunData(10.0, listOf(2.0, 4.0, 3.0), listOf(9.0))
        val ok = { name: String -> ComponentData(name, "ok", null, mapOf(), mapOf(), listOf(run)) }
        val comps = listOf(ok("encoder"), ok("denoiser"), ok("decoder"))
        assertEquals("ok", Report.status(comps))
        assertEquals((3.0 + 2 * 3.0 + 3.0) / 6, Report.perFrameMs(comps, 6, 2)!!, 1e-12)
        val failed = ComponentData("decoder", "failed", "Backend VulkanBackend is not registered.", mapOf(), mapOf(), listOf())
        assertEquals("partial", Report.status(listOf(ok("encoder"), failed)))
        assertEquals("failed", Report.status(listOf(failed)))
        assertNull(Report.perFrameMs(listOf(ok("encoder"), ok("denoiser"), failed), 6, 2))
    }

    @Test
    fun outputCheckMatchesParity() {
        val ref = floatArrayOf(1f, -2f, 3f, 4f)
        val psnrGate = Gate("psnr_db", ">=", 40.0)
        val off = OutputCheck.compare(listOf(floatArrayOf(1f, -2f, 3f, 5f)), listOf(ref), psnrGate, "rt", 1)
        assertEquals(20.0 * Math.log10(4.0 / 0.5), off["psnr_db"] as Double, 1e-12)
        assertEquals(1.0 / Math.sqrt(30.0), off["rel_l2"] as Double, 1e-12)
        assertEquals(false, off["passed"])
        assertEquals("psnr_db >= 40", off["gate"])
        val relGate = Gate("rel_l2", "<=", 0.2)
        assertEquals(true, OutputCheck.compare(listOf(floatArrayOf(1f, -2f, 3f, 5f)), listOf(ref), relGate, "rt", 1)["passed"])
        val same = OutputCheck.compare(listOf(ref.copyOf()), listOf(ref), psnrGate, "rt", 1)
        assertEquals("inf", same["psnr_db"])
        assertEquals(true, same["passed"])
        val nan = OutputCheck.compare(listOf(floatArrayOf(1f, Float.NaN, 3f, 4f)), listOf(ref), relGate, "rt", 1)
        assertEquals(false, nan["finite"])
        assertEquals(false, nan["passed"])
        // the raw little-endian float32 file the host stages, and the plan's check block
        val f = File.createTempFile("mi2v-check", ".bin")
        val buf = java.nio.ByteBuffer.allocate(16).order(java.nio.ByteOrder.LITTLE_ENDIAN)
        for (v in ref) buf.putFloat(v)
        f.writeBytes(buf.array())
        assertEquals(ref.toList(), OutputCheck.readFloats(f, 4).toList())
        try {
            OutputCheck.readFloats(f, 5)
            fail("accepted a short file")
        } catch (expected: IllegalArgumentException) {
        }
        f.delete()
        val plan = Args.parsePlan("""{"schema": "mi2v.app-plan/1", "components": [{"component": "decoder",
            "path": "/d/decoder.pte", "check": {"set": 0, "sets": 2, "gate": {"metric": "rel_l2", "op": "<=",
            "threshold": 0.0001}, "inputs": [{"name": "latent", "path": "/d/check/decoder.in0.bin", "shape": [1, 4],
            "dtype": "float32"}], "expected": [{"name": "video", "path": "/d/check/decoder.out0.bin",
            "shape": [2, 3], "dtype": "float32"}]}}]}""")
        val check = plan.components[0].check!!
        assertEquals(6, check.expected[0].count())
        assertEquals("rel_l2 <= 0.0001", check.gate.describe())
        assertEquals(2, check.sets)
        assertNull(Args.parsePlan("""{"schema": "mi2v.app-plan/1", "components": [{"component": "encoder",
            "path": "/e.pte"}]}""").components[0].check)
    }
}
