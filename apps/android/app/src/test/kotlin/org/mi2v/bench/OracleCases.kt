package org.mi2v.bench

// The command line the host oracles share (TileLoopOracle.kt, PipelineLoopOracle.kt): check each case folder the
// Python test wrote, print one line per case, exit 1 when any differs from the host and 2 without a case.

import java.io.File

object OracleCases {
    fun run(name: String, args: Array<String>, check: (File) -> String) {
        if (args.isEmpty()) {
            System.err.println("usage: $name CASE_DIR…")
            System.exit(2)
        }
        var failed = 0
        for (dir in args) {
            try {
                println("ok ${check(File(dir))}")
            } catch (e: Exception) {
                failed++
                println("MISMATCH $dir: ${e.message ?: e.toString()}")
            }
        }
        if (failed > 0) System.exit(1)
    }
}
