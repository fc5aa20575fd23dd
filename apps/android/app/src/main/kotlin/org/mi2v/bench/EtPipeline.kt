package org.mi2v.bench

import java.io.File
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

// The whole image-to-video run inside the app on ExecuTorch: PipelineLoop.generate (PipelineLoop.kt) through a
// ComponentRunner over `Module`s, the clips and their report in PipelineClips.kt / PipelineReport.kt. The Module
// calls are EtBench.kt's (Module.load with LOAD_MODE_MMAP, loadMethod with both error conventions, execute,
// EValue.from(Tensor.fromBlob(FloatArray, LongArray)), toTensor().dataAsFloatArray, destroy); `Tensor.shape()`
// gives an output's shape. Not compiled where it was written (no ExecuTorch AAR there): apps/README.md.

/** The three components as ExecuTorch programs, one resident at a time (PipelineLoop opens, runs, closes each).
 *  A tiled encoder / decoder runs through TiledComponent with an EtStageRunner: with residency "stage" one stage
 *  program is loaded at a time (its load is part of the component's run, as the host's TiledSession does). */
class EtComponentRunner(private val plan: PipelinePlan) : ComponentRunner {
    private var module: Module? = null
    private var stages: EtStageRunner? = null
    private var tiled: TiledComponent? = null

    override fun open(component: String) {
        val spec = plan.component(component)
        val record = spec.tiling
        if (record != null) {
            val runner = EtStageRunner(record.residency)
            stages = runner
            tiled = TiledComponent(record, runner)
        } else {
            module = EtPrograms.load(spec.path, spec.method)
        }
    }

    override fun run(component: String, inputs: Map<String, NdTensor>): Map<String, NdTensor> {
        val spec = plan.component(component)
        val t = tiled
        if (t != null) {
            val x = inputs[spec.inputs.firstOrNull() ?: ""] ?: inputs.values.first()
            return linkedMapOf(spec.outputs[0] to t.run(x))
        }
        val m = module ?: throw IllegalStateException("$component is not loaded")
        val args = ArrayList<EValue>()
        for (name in spec.inputs) {
            val x = inputs[name] ?: throw IllegalStateException("$component: no input '$name'")
            args.add(EValue.from(EtPrograms.tensor(x.data, x.shape)))
        }
        val outputs = m.execute(spec.method, *args.toTypedArray())
        if (outputs.size < spec.outputs.size) {
            throw IllegalStateException("$component returned ${outputs.size} outputs, ${spec.outputs.size} expected")
        }
        val out = LinkedHashMap<String, NdTensor>()
        for (k in spec.outputs.indices) {
            val y = outputs[k].toTensor()
            out[spec.outputs[k]] = NdTensor(y.dataAsFloatArray, EtPrograms.shape(y))
        }
        return out
    }

    override fun close(component: String) {
        module?.destroy()
        module = null
        stages?.releaseAll()
        stages = null
        tiled = null
    }
}

/** A tiled component's stage programs (`forward` on one window, input "x" → output "y"): loaded at `open(k)`,
 *  released at `close(k)` with residency "stage", kept until releaseAll with "all". */
class EtStageRunner(private val residency: String) : StageRunner {
    private val modules = HashMap<Int, Module>()

    override fun open(stage: Int, record: TiledStage) {
        if (stage !in modules) modules[stage] = EtPrograms.load(record.file, EtPrograms.METHOD)
    }

    override fun run(stage: Int, index: Int, window: FloatTensor): FloatTensor {
        val m = modules[stage] ?: throw IllegalStateException("tile stage $stage is not loaded")
        val outputs = m.execute(EtPrograms.METHOD, EValue.from(EtPrograms.tensor(window.data, window.shape)))
        if (outputs.isEmpty()) throw IllegalStateException("tile stage $stage returned no outputs")
        val y = outputs[0].toTensor()
        return FloatTensor(y.dataAsFloatArray, EtPrograms.shape(y))
    }

    override fun close(stage: Int) {
        if (residency == "stage") modules.remove(stage)?.destroy()
    }

    fun releaseAll() {
        for (m in modules.values) m.destroy()
        modules.clear()
    }
}

object EtPrograms {
    const val METHOD = "forward"

    /** Module.load (mmap) + loadMethod, as EtBench.oneRun; the module is destroyed if its method fails to load. */
    fun load(path: String, method: String): Module {
        val file = File(path)
        if (!file.isFile) throw IllegalStateException("$path does not exist on the phone (push it first)")
        if (!file.canRead()) throw IllegalStateException("the app cannot read $path (permission denied)")
        val module = Module.load(path, Module.LOAD_MODE_MMAP)
        try {
            // loadMethod returns an error code in the Java API (≤ 1.x) and throws in the Kotlin one: handle both.
            val rc: Any? = module.loadMethod(method)
            if (rc is Int && rc != 0) {
                throw IllegalStateException("loading method $method of $path failed with ExecuTorch error 0x" +
                    Integer.toHexString(rc))
            }
        } catch (t: Throwable) {
            module.destroy()
            throw t
        }
        return module
    }

    fun tensor(data: FloatArray, shape: IntArray): Tensor =
        Tensor.fromBlob(data, LongArray(shape.size) { shape[it].toLong() })

    fun shape(t: Tensor): IntArray {
        val s = t.shape()
        return IntArray(s.size) { s[it].toInt() }
    }
}

object EtPipeline {
    /** The clips of `req` on ExecuTorch; a failure is one line with ExecuTorch's own hints (EtBench.describe). */
    fun run(req: ClipsRequest, snapshot: () -> Map<String, Any?>, log: (String) -> Unit): ClipsRun {
        val runner = EtComponentRunner(req.plan)
        return PipelineClips.run(req, runner, snapshot, log) { EtBench.describe(it) }
    }
}
