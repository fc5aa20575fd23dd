package org.mi2v.bench

// Pure Kotlin (no Android, no ExecuTorch imports): the whole image-to-video run inside the app, the host's own
// sampler function for function: mi2v_export/pipeline/sampler.py (flow_schedule; Pipeline.generate, _load, _encode,
// _denoise, _decode: the reference latent written into latent frame 0, the flow-matching Euler steps, the decode,
// the crop to the video size), media.py (preprocess_image's normalisation to [-1, 1], to_uint8_frames) and
// shapes.py (VideoGeometry). Every value is computed with the host's operations, in its order and precision
// (float32 tensors; the schedule's second shift in float64, as numpy does it), so that given the same component
// outputs it gives the host's tensors bit for bit: tests/e2e/test_app_pipeline_loop.py runs it with kotlinc + java
// against recordings of `mi2v generate` on tiny-preset ONNX artifacts (PipelineLoopOracle.kt). The components run
// through a ComponentRunner, one resident at a time; a tiled encoder / decoder can run through TiledComponent
// (TileLoop.runStages). The Swift copy is apps/ios/Sources/Mi2vBench/PipelineLoop.swift. Kotlin 1.3+.

/** A float32 tensor of any rank, row-major. The denoiser's `timestep` and `flow_score` are shape [1], which
 *  TileLoop's FloatTensor (two spatial axes; what a tiled component takes: `toTiled`) cannot hold. */
class NdTensor(val data: FloatArray, val shape: IntArray) {
    init {
        require(FloatTensor.product(shape) == data.size) { "${data.size} values do not fill shape ${shape.toList()}" }
    }

    /** The same values as TileLoop's tensor (not copied). */
    fun toTiled(): FloatTensor = FloatTensor(data, shape)

    companion object {
        fun of(t: FloatTensor): NdTensor = NdTensor(t.data, t.shape)
    }
}

/** shapes.VideoGeometry with shapes.geometry's checks: an H × W × F video and its latent grid. */
class VideoGeometry(val height: Int, val width: Int, val frames: Int) {
    init {
        for (side in intArrayOf(height, width)) {
            require(side >= MIN_SIDE) { "a side of $side pixels is too small: the VAE needs at least $MIN_SIDE" }
            require(side % SPATIAL_PATCH == 0) { "a side of $side pixels is not a multiple of $SPATIAL_PATCH" }
        }
        require(frames >= 1 && (frames - 1) % TEMPORAL_FACTOR == 0) { "frames $frames is not 8k+1" }
    }

    val latentT: Int get() = (frames - 1) / TEMPORAL_FACTOR + 1
    val latentH: Int get() = (height + SPATIAL_FACTOR - 1) / SPATIAL_FACTOR
    val latentW: Int get() = (width + SPATIAL_FACTOR - 1) / SPATIAL_FACTOR
    val latentShape: IntArray get() = intArrayOf(1, LATENT_CHANNELS, latentT, latentH, latentW)

    /** The reference latent's shape: one latent frame. */
    val refShape: IntArray get() = intArrayOf(1, LATENT_CHANNELS, 1, latentH, latentW)
    val decodedHeight: Int get() = latentH * SPATIAL_FACTOR
    val decodedWidth: Int get() = latentW * SPATIAL_FACTOR

    companion object {
        const val LATENT_CHANNELS = 128
        const val SPATIAL_PATCH = 4
        const val SPATIAL_FACTOR = 32
        const val TEMPORAL_FACTOR = 8
        const val MIN_SIDE = 32
    }
}

/** sampler.FlowSchedule: the timesteps the denoiser receives (0–1000 scale) and the σ grid, one longer (last 0). */
class FlowSchedule(val timesteps: FloatArray, val sigmas: FloatArray) {
    val size: Int get() = timesteps.size
}

/** sampler.GenerateConfig less what the app does itself: no seed (the app brings the noise, see
 *  PipelineLoop.generate) and no fit (it brings the image already at height × width). */
class GenerateConfig(val height: Int, val width: Int, val frames: Int, val steps: Int = PipelineLoop.DEFAULT_STEPS,
                     val flowScore: Double = PipelineLoop.DEFAULT_FLOW_SCORE, val posterior: String = "sample") {
    init {
        require(posterior in PipelineLoop.POSTERIOR_MODES) { "posterior must be sample or mean, got '$posterior'" }
        require(!flowScore.isNaN() && !flowScore.isInfinite()) { "flow score must be a finite number" }
    }

    val geometry = VideoGeometry(height, width, frames)
    val schedule = PipelineLoop.flowSchedule(steps)
}

/** What runs the three components, one resident at a time: generate calls `open(c)` (the load, timed as such),
 *  `run(c, inputs)` (the encoder and decoder once, the denoiser once per step), then `close(c)` (the release, also
 *  when a run throws) before it opens the next. Inputs and outputs go by the contract's names (contract.IO):
 *  encoder image → latent (and logvar, if it has one); denoiser latent, timestep, flow_score → velocity; decoder
 *  latent → video. A `.pte` takes its inputs in the manifest's order: the denoiser's map iterates in that order. */
interface ComponentRunner {
    fun open(component: String) {}

    fun run(component: String, inputs: Map<String, NdTensor>): Map<String, NdTensor>

    fun close(component: String) {}
}

/** A tiled encoder / decoder for a ComponentRunner's `run`: its one input through TileLoop.runStages; `lastRun`
 *  keeps the per-window times of the last call. */
class TiledComponent(val record: TilingRecord, val stages: StageRunner) {
    var lastRun: TiledRun? = null

    fun run(x: NdTensor): NdTensor {
        val done = TileLoop.runStages(record, x.toTiled(), stages)
        lastRun = done
        return NdTensor.of(done.output)
    }
}

/** sampler.GenerateResult in the app's units: `timingsMs` has the host's `timings` keys (load_<component> each,
 *  load, encode, denoise, decode, postprocess) in ms, `stepMs` each denoiser step; `video` (1, 3, F, H, W) cropped
 *  and clamped to [-1, 1]; `frames` the (F, H, W, 3) uint8 frames; `latents` the latent after each step. */
class PipelineRun(val video: NdTensor, val frames: ByteArray, val condLatent: NdTensor, val latents: List<NdTensor>,
                  val schedule: FlowSchedule, val posterior: String, val timingsMs: Map<String, Double>,
                  val stepMs: List<Double>, val notes: List<String>)

object PipelineLoop {
    const val NUM_TRAIN_TIMESTEPS = 1000
    const val FLOW_SHIFT = 3.0
    const val DEFAULT_STEPS = 2
    const val DEFAULT_FLOW_SCORE = 2.0
    const val LOGVAR_MIN = -30.0f  // sampler.LOGVAR_CLAMP (diffusers DiagonalGaussianDistribution)
    const val LOGVAR_MAX = 20.0f
    val POSTERIOR_MODES = listOf("sample", "mean")
    const val ENCODER = "encoder"
    const val DENOISER = "denoiser"
    const val DECODER = "decoder"

    /** sampler.flow_schedule (diffusers FlowMatchEulerDiscreteScheduler(shift).set_timesteps(steps)): the float32
     *  training table's ends shifted in float32, `linspace` between them in float64, shifted again in float64,
     *  rounded to float32; timesteps = σ · 1000 in float32. 1 step → [1000]; 2 → [1000, 8.929]. */
    fun flowSchedule(steps: Int, shift: Double = FLOW_SHIFT,
                     numTrainTimesteps: Int = NUM_TRAIN_TIMESTEPS): FlowSchedule {
        val n = numTrainTimesteps
        require(steps >= 1) { "steps must be a positive integer, got $steps" }
        require(steps <= n) { "steps $steps exceeds the $n training timesteps" }
        val sigmaMax = shift32(n.toFloat() / n.toFloat(), shift)  // train[0]: (N/N) shifted
        val sigmaMin = shift32(1.0f / n.toFloat(), shift)  // train[-1]: (1/N) shifted
        val ts = linspace(sigmaMax.toDouble() * n, sigmaMin.toDouble() * n, steps)
        val sigmas = FloatArray(steps + 1)
        val timesteps = FloatArray(steps)
        for (i in 0 until steps) {
            val s = ts[i] / n
            sigmas[i] = (shift * s / (1 + (shift - 1) * s)).toFloat()
            timesteps[i] = sigmas[i] * n.toFloat()
        }
        return FlowSchedule(timesteps, sigmas)
    }

    /** The shift on a float32 tensor, as torch evaluates `shift * t / (1 + (shift - 1) * t)`. */
    private fun shift32(t: Float, shift: Double): Float = (shift.toFloat() * t) / (1.0f + (shift - 1).toFloat() * t)

    /** numpy.linspace(start, stop, num) in float64: i · step + start, the last value `stop` itself. */
    fun linspace(start: Double, stop: Double, num: Int): DoubleArray {
        val div = num - 1
        val delta = stop - start
        val step = if (div > 0) delta / div else Double.NaN
        val y = DoubleArray(num) {
            val i = it.toDouble()
            (if (div <= 0) i * delta else if (step == 0.0) i / div * delta else i * step) + start
        }
        if (num > 1) y[num - 1] = stop
        return y
    }

    /** media.preprocess_image's last step for an image already height × width (the app resizes it itself):
     *  interleaved RGB bytes (H, W, 3) → (1, 3, 1, H, W) float32, x / 255 · 2 − 1. */
    fun imageTensor(rgb: ByteArray, height: Int, width: Int): NdTensor {
        val plane = height * width
        require(rgb.size == plane * 3) { "${rgb.size} bytes are not a $height x $width RGB image" }
        val data = FloatArray(3 * plane) {
            val value = rgb[(it % plane) * 3 + it / plane].toInt() and 0xff
            value.toFloat() / 255.0f * 2.0f - 1.0f
        }
        return NdTensor(data, intArrayOf(1, 3, 1, height, width))
    }

    /** sampler.Pipeline.generate: encode → `config.steps` Euler steps → decode → crop, clamp, uint8 frames.
     *  `image` (1, 3, 1, H, W) in [-1, 1] (imageTensor). `noise` (1, 128, T, h, w) float32: the host draws it
     *  with torch.randn from a CPU torch.Generator seeded with the seed, which Kotlin cannot reproduce, so the app
     *  brings it (ships the host's draw for a bit-exact run, or draws its own standard normal noise: another, equally
     *  valid video). `posteriorNoise` (1, 128, 1, h, w): the host's second draw, used only when the encoder gives a
     *  `logvar` and `config.posterior` is "sample" (the contract's artifacts give only the mean). */
    fun generate(image: NdTensor, noise: NdTensor, config: GenerateConfig, runner: ComponentRunner,
                 posteriorNoise: NdTensor? = null, progress: ((String, Int, Int) -> Unit)? = null): PipelineRun {
        val geo = config.geometry
        checkShape("the image", image, intArrayOf(1, 3, 1, geo.height, geo.width))
        checkShape("the noise", noise, geo.latentShape)
        val timings = LinkedHashMap<String, Double>()
        val notes = ArrayList<String>()
        progress?.invoke("encode", 0, 1)
        val ref = resident(ENCODER, runner, timings) {
            timed(timings, "encode") { encode(runner, image, geo, config.posterior, posteriorNoise, notes) }
        }
        progress?.invoke("encode", 1, 1)
        val stepMs = ArrayList<Double>()
        val latents = resident(DENOISER, runner, timings) {
            denoise(runner, noise, ref.first, config, stepMs, progress)
        }
        timings["denoise"] = stepMs.sum()
        progress?.invoke("decode", 0, 1)
        val decoded = resident(DECODER, runner, timings) {
            timed(timings, "decode") { decode(runner, latents[latents.size - 1], geo) }
        }
        progress?.invoke("decode", 1, 1)
        val t0 = System.nanoTime()
        val video = cropVideo(decoded, geo)
        val frames = toUint8Frames(video)
        timings["postprocess"] = msSince(t0)
        return PipelineRun(video, frames, ref.first, latents, config.schedule, ref.second, timings, stepMs, notes)
    }

    /** sampler._load and the release after: `open` timed into load_<component> and load, then `block`, then
     *  `close` (also when the block throws). */
    private inline fun <T> resident(component: String, runner: ComponentRunner, timings: MutableMap<String, Double>,
                                    block: () -> T): T {
        val t0 = System.nanoTime()
        runner.open(component)
        try {
            val ms = msSince(t0)
            timings["load_$component"] = ms
            timings["load"] = (timings["load"] ?: 0.0) + ms
            return block()
        } finally {
            runner.close(component)
        }
    }

    private inline fun <T> timed(timings: MutableMap<String, Double>, key: String, block: () -> T): T {
        val t0 = System.nanoTime()
        val result = block()
        timings[key] = msSince(t0)
        return result
    }

    private fun msSince(t0: Long): Double = (System.nanoTime() - t0) / 1e6

    /** sampler._encode: the reference latent and the mode used. A posterior sample when asked for and the encoder
     *  gives `logvar`; else the mean (with a note when a sample was asked for). */
    fun encode(runner: ComponentRunner, image: NdTensor, geo: VideoGeometry, mode: String, posteriorNoise: NdTensor?,
               notes: MutableList<String>): Pair<NdTensor, String> {
        val out = runner.run(ENCODER, linkedMapOf("image" to image))
        val mean = out["latent"] ?: throw IllegalStateException("the encoder returned no 'latent'")
        checkShape("the encoder's latent", mean, geo.refShape)
        val logvar = out["logvar"]
        if (mode == "sample" && logvar != null) {
            val eps = posteriorNoise ?: throw IllegalArgumentException("the encoder gives a log-variance: posterior " +
                "sampling needs the posterior noise (1, 128, 1, h, w), or use posterior \"mean\"")
            checkShape("the posterior noise", eps, geo.refShape)
            return Pair(samplePosterior(mean, logvar, eps), mode)
        }
        if (mode == "sample") {
            notes.add("posterior mean used as the reference latent: the encoder gives no log-variance")
        }
        return Pair(mean, "mean")
    }

    /** mean + exp(0.5 · clamp(logvar, −30, 20)) · ε in float32, a (1, 1, 1, h, w) logvar broadcast over the
     *  channels. exp is Math.exp rounded to float32; torch's float32 exp may differ from it by an ulp. */
    fun samplePosterior(mean: NdTensor, logvar: NdTensor, eps: NdTensor): NdTensor {
        val plane = logvar.data.size
        require(plane > 0 && mean.data.size % plane == 0) { "logvar ${logvar.shape.toList()} does not broadcast" }
        val std = FloatArray(plane) {
            Math.exp((0.5f * clamp(logvar.data[it], LOGVAR_MIN, LOGVAR_MAX)).toDouble()).toFloat()
        }
        return NdTensor(FloatArray(mean.data.size) { mean.data[it] + std[it % plane] * eps.data[it] }, mean.shape)
    }

    /** sampler._denoise: the latent is the noise with frame 0 set to the reference; per step the denoiser's velocity
     *  at (latent, t_i, flow score), the Euler step latent + (σ_{i+1} − σ_i) · v in float32, frame 0 re-imposed.
     *  Returns the latent after each step; each step's time goes to `stepMs`. */
    fun denoise(runner: ComponentRunner, noise: NdTensor, ref: NdTensor, config: GenerateConfig,
                stepMs: MutableList<Double>, progress: ((String, Int, Int) -> Unit)? = null): List<NdTensor> {
        val sched = config.schedule
        var latent = withFirstFrame(noise.data.copyOf(), noise.shape, ref)
        val flow = NdTensor(floatArrayOf(config.flowScore.toFloat()), intArrayOf(1))
        val latents = ArrayList<NdTensor>()
        progress?.invoke("denoise", 0, sched.size)
        for (i in 0 until sched.size) {
            val t0 = System.nanoTime()
            val t = NdTensor(floatArrayOf(sched.timesteps[i]), intArrayOf(1))
            val out = runner.run(DENOISER, linkedMapOf("latent" to latent, "timestep" to t, "flow_score" to flow))
            val v = out["velocity"] ?: throw IllegalStateException("the denoiser returned no 'velocity'")
            checkShape("the denoiser's velocity", v, latent.shape)
            latent = withFirstFrame(eulerStep(latent.data, v.data, sched.sigmas[i + 1] - sched.sigmas[i]),
                latent.shape, ref)
            latents.add(latent)
            stepMs.add(msSince(t0))
            progress?.invoke("denoise", i + 1, sched.size)
        }
        return latents
    }

    /** latent + dt · v, float32 (a product, then a sum: no fused multiply-add), a new array. */
    fun eulerStep(latent: FloatArray, v: FloatArray, dt: Float): FloatArray =
        FloatArray(latent.size) { latent[it] + dt * v[it] }

    /** latent[:, :, :1] = ref in place on `data` (shape (B, C, T, h, w), ref (B, C, 1, h, w)); the tensor. */
    fun withFirstFrame(data: FloatArray, shape: IntArray, ref: NdTensor): NdTensor {
        val plane = shape[3] * shape[4]
        val channels = shape[0] * shape[1]
        require(ref.data.size == channels * plane) { "reference ${ref.shape.toList()} does not fit ${shape.toList()}" }
        for (c in 0 until channels) System.arraycopy(ref.data, c * plane, data, c * shape[2] * plane, plane)
        return NdTensor(data, shape)
    }

    /** sampler._decode: the video (1, 3, F, 32·h, 32·w). */
    fun decode(runner: ComponentRunner, latent: NdTensor, geo: VideoGeometry): NdTensor {
        val video = runner.run(DECODER, linkedMapOf("latent" to latent))["video"]
            ?: throw IllegalStateException("the decoder returned no 'video'")
        checkShape("the decoder's video", video, intArrayOf(1, 3, geo.frames, geo.decodedHeight, geo.decodedWidth))
        return video
    }

    /** video[:, :, :F, :H, :W].clamp(-1, 1): the decoded video cropped to the video size (736 → 720 rows). */
    fun cropVideo(video: NdTensor, geo: VideoGeometry): NdTensor {
        val s = video.shape
        val frames = Math.min(geo.frames, s[2])
        val rows = Math.min(geo.height, s[3])
        val cols = Math.min(geo.width, s[4])
        val out = FloatArray(s[0] * s[1] * frames * rows * cols)
        var k = 0
        for (bc in 0 until s[0] * s[1]) {
            for (f in 0 until frames) {
                for (r in 0 until rows) {
                    val src = ((bc * s[2] + f) * s[3] + r) * s[4]
                    for (c in 0 until cols) out[k++] = clamp(video.data[src + c], -1.0f, 1.0f)
                }
            }
        }
        return NdTensor(out, intArrayOf(s[0], s[1], frames, rows, cols))
    }

    /** media.to_uint8_frames: (1, 3, F, H, W) in [-1, 1] → (F, H, W, 3) bytes, ((x + 1) / 2 · 255 + 0.5) clamped
     *  to [0, 255] and truncated, in float32 (a NaN becomes 0). */
    fun toUint8Frames(video: NdTensor): ByteArray {
        val channels = video.shape[1]
        val pixels = video.data.size / channels
        val out = ByteArray(video.data.size)
        for (ch in 0 until channels) {
            for (p in 0 until pixels) {
                val x = clamp(video.data[ch * pixels + p], -1.0f, 1.0f)
                val y = clamp((x + 1.0f) / 2.0f * 255.0f + 0.5f, 0.0f, 255.0f)
                out[p * channels + ch] = (if (y.isNaN()) 0 else y.toInt()).toByte()
            }
        }
        return out
    }

    /** torch.clamp: NaN stays NaN. */
    fun clamp(x: Float, lo: Float, hi: Float): Float = if (x < lo) lo else if (x > hi) hi else x

    private fun checkShape(what: String, t: NdTensor, want: IntArray) {
        if (!(t.shape contentEquals want)) {
            throw IllegalStateException("$what is ${t.shape.toList()}, expected ${want.toList()}")
        }
    }
}
