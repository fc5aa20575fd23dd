// Platform-free part of the iOS app (Foundation only): the whole image-to-video run inside the app. The Swift copy of
// apps/android/app/src/main/kotlin/org/mi2v/bench/PipelineLoop.kt, which is the host's own sampler function for
// function: mi2v_export/pipeline/sampler.py (flow_schedule; Pipeline.generate, _load, _encode, _denoise, _decode:
// the reference latent written into latent frame 0, the flow-matching Euler steps, the decode, the crop to the video
// size), media.py (preprocess_image's normalisation to [-1, 1], to_uint8_frames) and shapes.py (VideoGeometry), in
// the host's operations, order and precision (float32; the schedule's second shift in float64). The Kotlin copy is
// tested with the host as its oracle (tests/e2e/test_app_pipeline_loop.py); this one has NOT been compiled or run
// (no Swift toolchain where it was written): keep the two in step, function for function.
import Foundation

public enum PipelineLoopError: Error, CustomStringConvertible {
    case invalid(String)

    public var description: String {
        switch self {
        case .invalid(let why): return why
        }
    }
}

/// A float32 tensor of any rank, row-major. The denoiser's `timestep` and `flow_score` are shape [1], which
/// TileLoop's FloatTensor (two spatial axes; what a tiled component takes: `toTiled`) cannot hold.
public struct NdTensor {
    public let data: [Float]
    public let shape: [Int]

    public init(data: [Float], shape: [Int]) throws {
        guard FloatTensor.product(shape) == data.count else {
            throw PipelineLoopError.invalid("\(data.count) values do not fill shape \(shape)")
        }
        self.data = data
        self.shape = shape
    }

    /// The same values as TileLoop's tensor.
    public func toTiled() throws -> FloatTensor { try FloatTensor(data: data, shape: shape) }

    public static func of(_ t: FloatTensor) throws -> NdTensor { try NdTensor(data: t.data, shape: t.shape) }
}

/// shapes.VideoGeometry with shapes.geometry's checks: an H × W × F video and its latent grid.
public struct VideoGeometry {
    public static let latentChannels = 128
    public static let spatialPatch = 4
    public static let spatialFactor = 32
    public static let temporalFactor = 8
    public static let minSide = 32

    public let height: Int
    public let width: Int
    public let frames: Int

    public init(height: Int, width: Int, frames: Int) throws {
        for side in [height, width] {
            guard side >= VideoGeometry.minSide else {
                throw PipelineLoopError.invalid("a side of \(side) pixels is too small: the VAE needs at least " +
                                                "\(VideoGeometry.minSide)")
            }
            guard side % VideoGeometry.spatialPatch == 0 else {
                throw PipelineLoopError.invalid("a side of \(side) pixels is not a multiple of " +
                                                "\(VideoGeometry.spatialPatch)")
            }
        }
        guard frames >= 1 && (frames - 1) % VideoGeometry.temporalFactor == 0 else {
            throw PipelineLoopError.invalid("frames \(frames) is not 8k+1")
        }
        self.height = height
        self.width = width
        self.frames = frames
    }

    public var latentT: Int { (frames - 1) / VideoGeometry.temporalFactor + 1 }
    public var latentH: Int { (height + VideoGeometry.spatialFactor - 1) / VideoGeometry.spatialFactor }
    public var latentW: Int { (width + VideoGeometry.spatialFactor - 1) / VideoGeometry.spatialFactor }
    public var latentShape: [Int] { [1, VideoGeometry.latentChannels, latentT, latentH, latentW] }

    /// The reference latent's shape: one latent frame.
    public var refShape: [Int] { [1, VideoGeometry.latentChannels, 1, latentH, latentW] }
    public var decodedHeight: Int { latentH * VideoGeometry.spatialFactor }
    public var decodedWidth: Int { latentW * VideoGeometry.spatialFactor }
}

/// sampler.FlowSchedule: the timesteps the denoiser receives (0–1000 scale) and the σ grid, one longer (last 0).
public struct FlowSchedule {
    public let timesteps: [Float]
    public let sigmas: [Float]

    public var size: Int { timesteps.count }
}

/// sampler.GenerateConfig less what the app does itself: no seed (the app brings the noise, see
/// PipelineLoop.generate) and no fit (it brings the image already at height × width).
public struct GenerateConfig {
    public let height: Int
    public let width: Int
    public let frames: Int
    public let steps: Int
    public let flowScore: Double
    public let posterior: String
    public let geometry: VideoGeometry
    public let schedule: FlowSchedule

    public init(height: Int, width: Int, frames: Int, steps: Int = PipelineLoop.defaultSteps,
                flowScore: Double = PipelineLoop.defaultFlowScore, posterior: String = "sample") throws {
        guard PipelineLoop.posteriorModes.contains(posterior) else {
            throw PipelineLoopError.invalid("posterior must be sample or mean, got '\(posterior)'")
        }
        guard flowScore.isFinite else { throw PipelineLoopError.invalid("flow score must be a finite number") }
        self.height = height
        self.width = width
        self.frames = frames
        self.steps = steps
        self.flowScore = flowScore
        self.posterior = posterior
        self.geometry = try VideoGeometry(height: height, width: width, frames: frames)
        self.schedule = try PipelineLoop.flowSchedule(steps)
    }
}

/// What runs the three components, one resident at a time: generate calls `open(c)` (the load, timed as such),
/// `run(c, inputs)` (the encoder and decoder once, the denoiser once per step), then `close(c)` (the release, also
/// when a run throws) before it opens the next. Inputs and outputs go by the contract's names (contract.IO):
/// encoder image → latent (and logvar, if it has one); denoiser latent, timestep, flow_score → velocity; decoder
/// latent → video. A Core ML model takes them by name (a Swift dictionary has no order).
public protocol ComponentRunner: AnyObject {
    func open(component: String) throws

    func run(component: String, inputs: [String: NdTensor]) throws -> [String: NdTensor]

    func close(component: String)
}

public extension ComponentRunner {
    func open(component: String) throws {}
    func close(component: String) {}
}

/// A tiled encoder / decoder for a ComponentRunner's `run`: its one input through TileLoop.runStages; `lastRun`
/// keeps the per-window times of the last call.
public final class TiledComponent {
    public let record: TilingRecord
    public let stages: StageRunner
    public var lastRun: TiledRun? = nil

    public init(record: TilingRecord, stages: StageRunner) {
        self.record = record
        self.stages = stages
    }

    public func run(_ x: NdTensor) throws -> NdTensor {
        let done = try TileLoop.runStages(record, x.toTiled(), runner: stages)
        lastRun = done
        return try NdTensor.of(done.output)
    }
}

/// sampler.GenerateResult in the app's units: `timingsMs` has the host's `timings` keys (load_<component> each,
/// load, encode, denoise, decode, postprocess) in ms, `stepMs` each denoiser step; `video` (1, 3, F, H, W) cropped
/// and clamped to [-1, 1]; `frames` the (F, H, W, 3) uint8 frames; `latents` the latent after each step.
public struct PipelineRun {
    public let video: NdTensor
    public let frames: [UInt8]
    public let condLatent: NdTensor
    public let latents: [NdTensor]
    public let schedule: FlowSchedule
    public let posterior: String
    public let timingsMs: [String: Double]
    public let stepMs: [Double]
    public let notes: [String]
}

/// The run's timings, shared by the closures of generate (a reference: Kotlin's MutableMap).
private final class Timings {
    var ms: [String: Double] = [:]
}

public enum PipelineLoop {
    public static let numTrainTimesteps = 1000
    public static let flowShift = 3.0
    public static let defaultSteps = 2
    public static let defaultFlowScore = 2.0
    public static let logvarMin: Float = -30.0  // sampler.LOGVAR_CLAMP (diffusers DiagonalGaussianDistribution)
    public static let logvarMax: Float = 20.0
    public static let posteriorModes = ["sample", "mean"]
    public static let encoder = "encoder"
    public static let denoiser = "denoiser"
    public static let decoder = "decoder"

    /// sampler.flow_schedule (diffusers FlowMatchEulerDiscreteScheduler(shift).set_timesteps(steps)): the float32
    /// training table's ends shifted in float32, `linspace` between them in float64, shifted again in float64,
    /// rounded to float32; timesteps = σ · 1000 in float32. 1 step → [1000]; 2 → [1000, 8.929].
    public static func flowSchedule(_ steps: Int, shift: Double = PipelineLoop.flowShift,
                                    numTrainTimesteps: Int = PipelineLoop.numTrainTimesteps) throws -> FlowSchedule {
        let n = numTrainTimesteps
        guard steps >= 1 else { throw PipelineLoopError.invalid("steps must be a positive integer, got \(steps)") }
        guard steps <= n else { throw PipelineLoopError.invalid("steps \(steps) exceeds the \(n) training timesteps") }
        let sigmaMax = shift32(Float(n) / Float(n), shift)  // train[0]: (N/N) shifted
        let sigmaMin = shift32(Float(1.0) / Float(n), shift)  // train[-1]: (1/N) shifted
        let ts = linspace(Double(sigmaMax) * Double(n), Double(sigmaMin) * Double(n), steps)
        var sigmas = [Float](repeating: 0, count: steps + 1)
        var timesteps = [Float](repeating: 0, count: steps)
        for i in 0..<steps {
            let s = ts[i] / Double(n)
            sigmas[i] = Float(shift * s / (1 + (shift - 1) * s))
            timesteps[i] = sigmas[i] * Float(n)
        }
        return FlowSchedule(timesteps: timesteps, sigmas: sigmas)
    }

    /// The shift on a float32 tensor, as torch evaluates `shift * t / (1 + (shift - 1) * t)`.
    private static func shift32(_ t: Float, _ shift: Double) -> Float {
        (Float(shift) * t) / (Float(1.0) + Float(shift - 1) * t)
    }

    /// numpy.linspace(start, stop, num) in float64: i · step + start, the last value `stop` itself.
    public static func linspace(_ start: Double, _ stop: Double, _ num: Int) -> [Double] {
        let div = num - 1
        let delta = stop - start
        let step = div > 0 ? delta / Double(div) : Double.nan
        var y = (0..<num).map { (k: Int) -> Double in
            let i = Double(k)
            return (div <= 0 ? i * delta : (step == 0.0 ? i / Double(div) * delta : i * step)) + start
        }
        if num > 1 { y[num - 1] = stop }
        return y
    }

    /// media.preprocess_image's last step for an image already height × width (the app resizes it itself):
    /// interleaved RGB bytes (H, W, 3) → (1, 3, 1, H, W) float32, x / 255 · 2 − 1.
    public static func imageTensor(_ rgb: [UInt8], height: Int, width: Int) throws -> NdTensor {
        let plane = height * width
        guard rgb.count == plane * 3 else {
            throw PipelineLoopError.invalid("\(rgb.count) bytes are not a \(height) x \(width) RGB image")
        }
        let data = (0..<(3 * plane)).map { (k: Int) -> Float in
            let value = Float(rgb[(k % plane) * 3 + k / plane])
            return value / Float(255.0) * Float(2.0) - Float(1.0)
        }
        return try NdTensor(data: data, shape: [1, 3, 1, height, width])
    }

    /// sampler.Pipeline.generate: encode → `config.steps` Euler steps → decode → crop, clamp, uint8 frames.
    /// `image` (1, 3, 1, H, W) in [-1, 1] (imageTensor). `noise` (1, 128, T, h, w) float32: the host draws it with
    /// torch.randn from a CPU torch.Generator seeded with the seed, which Swift cannot reproduce, so the app brings
    /// it (ships the host's draw for a bit-exact run, or draws its own standard normal noise: another, equally
    /// valid video). `posteriorNoise` (1, 128, 1, h, w): the host's second draw, used only when the encoder gives a
    /// `logvar` and `config.posterior` is "sample" (the contract's artifacts give only the mean).
    public static func generate(image: NdTensor, noise: NdTensor, config: GenerateConfig, runner: ComponentRunner,
                                posteriorNoise: NdTensor? = nil,
                                progress: ((String, Int, Int) -> Void)? = nil) throws -> PipelineRun {
        let geo = config.geometry
        try checkShape("the image", image, [1, 3, 1, geo.height, geo.width])
        try checkShape("the noise", noise, geo.latentShape)
        let timings = Timings()
        var notes: [String] = []
        progress?("encode", 0, 1)
        let ref = try resident(encoder, runner, timings) {
            try timed(timings, "encode") { try encode(runner, image, geo, config.posterior, posteriorNoise, &notes) }
        }
        progress?("encode", 1, 1)
        var stepMs: [Double] = []
        let latents = try resident(denoiser, runner, timings) {
            try denoise(runner, noise, ref.0, config, &stepMs, progress)
        }
        timings.ms["denoise"] = stepMs.reduce(0, +)
        progress?("decode", 0, 1)
        let decoded = try resident(decoder, runner, timings) {
            try timed(timings, "decode") { try decode(runner, latents[latents.count - 1], geo) }
        }
        progress?("decode", 1, 1)
        let t0 = DispatchTime.now().uptimeNanoseconds
        let video = try cropVideo(decoded, geo)
        let frames = toUint8Frames(video)
        timings.ms["postprocess"] = msSince(t0)
        return PipelineRun(video: video, frames: frames, condLatent: ref.0, latents: latents,
                           schedule: config.schedule, posterior: ref.1, timingsMs: timings.ms, stepMs: stepMs,
                           notes: notes)
    }

    /// sampler._load and the release after: `open` timed into load_<component> and load, then `block`, then
    /// `close` (also when the block throws).
    private static func resident<T>(_ component: String, _ runner: ComponentRunner, _ timings: Timings,
                                    _ block: () throws -> T) throws -> T {
        let t0 = DispatchTime.now().uptimeNanoseconds
        try runner.open(component: component)
        defer { runner.close(component: component) }
        let ms = msSince(t0)
        timings.ms["load_\(component)"] = ms
        timings.ms["load"] = (timings.ms["load"] ?? 0.0) + ms
        return try block()
    }

    private static func timed<T>(_ timings: Timings, _ key: String, _ block: () throws -> T) throws -> T {
        let t0 = DispatchTime.now().uptimeNanoseconds
        let result = try block()
        timings.ms[key] = msSince(t0)
        return result
    }

    private static func msSince(_ t0: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6 }

    /// sampler._encode: the reference latent and the mode used. A posterior sample when asked for and the encoder
    /// gives `logvar`; else the mean (with a note when a sample was asked for).
    public static func encode(_ runner: ComponentRunner, _ image: NdTensor, _ geo: VideoGeometry, _ mode: String,
                              _ posteriorNoise: NdTensor?, _ notes: inout [String]) throws -> (NdTensor, String) {
        let out = try runner.run(component: encoder, inputs: ["image": image])
        guard let mean = out["latent"] else { throw PipelineLoopError.invalid("the encoder returned no 'latent'") }
        try checkShape("the encoder's latent", mean, geo.refShape)
        let logvar = out["logvar"]
        if mode == "sample", let logvar = logvar {
            guard let eps = posteriorNoise else {
                throw PipelineLoopError.invalid("the encoder gives a log-variance: posterior sampling needs the " +
                                                "posterior noise (1, 128, 1, h, w), or use posterior \"mean\"")
            }
            try checkShape("the posterior noise", eps, geo.refShape)
            let sample = try samplePosterior(mean, logvar, eps)
            return (sample, mode)
        }
        if mode == "sample" {
            notes.append("posterior mean used as the reference latent: the encoder gives no log-variance")
        }
        return (mean, "mean")
    }

    /// mean + exp(0.5 · clamp(logvar, −30, 20)) · ε in float32, a (1, 1, 1, h, w) logvar broadcast over the
    /// channels. exp is Foundation's float64 exp rounded to float32; torch's float32 exp may differ by an ulp.
    public static func samplePosterior(_ mean: NdTensor, _ logvar: NdTensor, _ eps: NdTensor) throws -> NdTensor {
        let plane = logvar.data.count
        guard plane > 0 && mean.data.count % plane == 0 else {
            throw PipelineLoopError.invalid("logvar \(logvar.shape) does not broadcast")
        }
        let std = (0..<plane).map { (k: Int) -> Float in
            Float(exp(Double(Float(0.5) * clamp(logvar.data[k], logvarMin, logvarMax))))
        }
        let data = (0..<mean.data.count).map { (k: Int) -> Float in mean.data[k] + std[k % plane] * eps.data[k] }
        return try NdTensor(data: data, shape: mean.shape)
    }

    /// sampler._denoise: the latent is the noise with frame 0 set to the reference; per step the denoiser's velocity
    /// at (latent, t_i, flow score), the Euler step latent + (σ_{i+1} − σ_i) · v in float32, frame 0 re-imposed.
    /// Returns the latent after each step; each step's time goes to `stepMs`.
    public static func denoise(_ runner: ComponentRunner, _ noise: NdTensor, _ ref: NdTensor, _ config: GenerateConfig,
                               _ stepMs: inout [Double],
                               _ progress: ((String, Int, Int) -> Void)? = nil) throws -> [NdTensor] {
        let sched = config.schedule
        var latent = try withFirstFrame(noise.data, noise.shape, ref)
        let flow = try NdTensor(data: [Float(config.flowScore)], shape: [1])
        var latents: [NdTensor] = []
        progress?("denoise", 0, sched.size)
        for i in 0..<sched.size {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let t = try NdTensor(data: [sched.timesteps[i]], shape: [1])
            let out = try runner.run(component: denoiser,
                                     inputs: ["latent": latent, "timestep": t, "flow_score": flow])
            guard let v = out["velocity"] else {
                throw PipelineLoopError.invalid("the denoiser returned no 'velocity'")
            }
            try checkShape("the denoiser's velocity", v, latent.shape)
            latent = try withFirstFrame(eulerStep(latent.data, v.data, sched.sigmas[i + 1] - sched.sigmas[i]),
                                        latent.shape, ref)
            latents.append(latent)
            stepMs.append(msSince(t0))
            progress?("denoise", i + 1, sched.size)
        }
        return latents
    }

    /// latent + dt · v, float32 (a product, then a sum: no fused multiply-add), a new array.
    public static func eulerStep(_ latent: [Float], _ v: [Float], _ dt: Float) -> [Float] {
        (0..<latent.count).map { (k: Int) -> Float in latent[k] + dt * v[k] }
    }

    /// latent[:, :, :1] = ref on a copy of `data` (shape (B, C, T, h, w), ref (B, C, 1, h, w)); the tensor.
    public static func withFirstFrame(_ data: [Float], _ shape: [Int], _ ref: NdTensor) throws -> NdTensor {
        let plane = shape[3] * shape[4]
        let channels = shape[0] * shape[1]
        guard ref.data.count == channels * plane else {
            throw PipelineLoopError.invalid("reference \(ref.shape) does not fit \(shape)")
        }
        var out = data
        for c in 0..<channels {
            let dst = c * shape[2] * plane
            out.replaceSubrange(dst..<(dst + plane), with: ref.data[(c * plane)..<((c + 1) * plane)])
        }
        return try NdTensor(data: out, shape: shape)
    }

    /// sampler._decode: the video (1, 3, F, 32·h, 32·w).
    public static func decode(_ runner: ComponentRunner, _ latent: NdTensor, _ geo: VideoGeometry) throws -> NdTensor {
        guard let video = try runner.run(component: decoder, inputs: ["latent": latent])["video"] else {
            throw PipelineLoopError.invalid("the decoder returned no 'video'")
        }
        try checkShape("the decoder's video", video, [1, 3, geo.frames, geo.decodedHeight, geo.decodedWidth])
        return video
    }

    /// video[:, :, :F, :H, :W].clamp(-1, 1): the decoded video cropped to the video size (736 → 720 rows).
    public static func cropVideo(_ video: NdTensor, _ geo: VideoGeometry) throws -> NdTensor {
        let s = video.shape
        let frames = min(geo.frames, s[2])
        let rows = min(geo.height, s[3])
        let cols = min(geo.width, s[4])
        var out: [Float] = []
        out.reserveCapacity(s[0] * s[1] * frames * rows * cols)
        for bc in 0..<(s[0] * s[1]) {
            for f in 0..<frames {
                for r in 0..<rows {
                    let src = ((bc * s[2] + f) * s[3] + r) * s[4]
                    for c in 0..<cols { out.append(clamp(video.data[src + c], -1.0, 1.0)) }
                }
            }
        }
        return try NdTensor(data: out, shape: [s[0], s[1], frames, rows, cols])
    }

    /// media.to_uint8_frames: (1, 3, F, H, W) in [-1, 1] → (F, H, W, 3) bytes, ((x + 1) / 2 · 255 + 0.5) clamped
    /// to [0, 255] and truncated, in float32 (a NaN becomes 0).
    public static func toUint8Frames(_ video: NdTensor) -> [UInt8] {
        let channels = video.shape[1]
        let pixels = video.data.count / channels
        var out = [UInt8](repeating: 0, count: video.data.count)
        for ch in 0..<channels {
            for p in 0..<pixels {
                let x = clamp(video.data[ch * pixels + p], -1.0, 1.0)
                let y = clamp((x + Float(1.0)) / Float(2.0) * Float(255.0) + Float(0.5), 0.0, 255.0)
                out[p * channels + ch] = y.isNaN ? 0 : UInt8(y)
            }
        }
        return out
    }

    /// torch.clamp: NaN stays NaN.
    public static func clamp(_ x: Float, _ lo: Float, _ hi: Float) -> Float { x < lo ? lo : (x > hi ? hi : x) }

    private static func checkShape(_ what: String, _ t: NdTensor, _ want: [Int]) throws {
        if t.shape != want { throw PipelineLoopError.invalid("\(what) is \(t.shape), expected \(want)") }
    }
}
