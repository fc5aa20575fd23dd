package org.mi2v.bench

import android.app.ActivityManager
import android.content.Context
import android.content.Intent
import android.content.IntentFilter
import android.os.BatteryManager
import android.os.Build
import android.os.PowerManager
import java.io.File

/** What the app can tell about the phone and its state, in the report's device / conditions form. */
object DeviceFacts {
    fun device(context: Context): LinkedHashMap<String, Any?> {
        val mem = ActivityManager.MemoryInfo()
        (context.getSystemService(Context.ACTIVITY_SERVICE) as ActivityManager).getMemoryInfo(mem)
        val sdk = Build.VERSION.SDK_INT
        val m = LinkedHashMap<String, Any?>()
        m["transport"] = "adb"
        m["simulated_device"] = false
        m["manufacturer"] = Build.MANUFACTURER
        m["brand"] = Build.BRAND
        m["model"] = Build.MODEL
        m["device"] = Build.DEVICE
        m["product"] = Build.PRODUCT
        m["soc_manufacturer"] = if (sdk >= 31) Build.SOC_MANUFACTURER else null
        m["soc_model"] = if (sdk >= 31) Build.SOC_MODEL else Build.HARDWARE
        m["board_platform"] = Build.BOARD
        m["hardware"] = Build.HARDWARE
        m["os"] = "android"
        m["os_version"] = Build.VERSION.RELEASE
        m["sdk_int"] = sdk
        m["build_fingerprint"] = Build.FINGERPRINT
        m["build_type"] = Build.TYPE
        m["abi"] = Build.SUPPORTED_ABIS.firstOrNull()
        m["abilist"] = Build.SUPPORTED_ABIS.toList()
        m["mem_total_kb"] = mem.totalMem / 1024
        m["mem_available_kb"] = mem.availMem / 1024
        m["cores"] = Runtime.getRuntime().availableProcessors()
        return m
    }

    /** Thermal status (Android 10+: 0 none … 6 shutdown), battery level / temperature / charger. */
    fun snapshot(context: Context): LinkedHashMap<String, Any?> {
        val m = LinkedHashMap<String, Any?>()
        m["time_utc"] = Report.utcNow()
        m["thermal_status"] = if (Build.VERSION.SDK_INT >= 29) {
            (context.getSystemService(Context.POWER_SERVICE) as PowerManager).currentThermalStatus
        } else {
            null
        }
        val battery = LinkedHashMap<String, Any?>()
        val intent: Intent? = context.registerReceiver(null, IntentFilter(Intent.ACTION_BATTERY_CHANGED))
        if (intent != null) {
            val level = intent.getIntExtra(BatteryManager.EXTRA_LEVEL, -1)
            val scale = intent.getIntExtra(BatteryManager.EXTRA_SCALE, -1)
            if (level >= 0 && scale > 0) battery["level"] = level * 100 / scale
            val temp = intent.getIntExtra(BatteryManager.EXTRA_TEMPERATURE, Int.MIN_VALUE)
            if (temp != Int.MIN_VALUE) battery["temp_c"] = temp / 10.0
            battery["plugged"] = when (intent.getIntExtra(BatteryManager.EXTRA_PLUGGED, 0)) {
                BatteryManager.BATTERY_PLUGGED_AC -> "ac"
                BatteryManager.BATTERY_PLUGGED_USB -> "usb"
                BatteryManager.BATTERY_PLUGGED_WIRELESS -> "wireless"
                else -> "none"
            }
        }
        m["battery"] = battery
        m["temps_c"] = LinkedHashMap<String, Any?>()
        return m
    }

    /** The process's peak resident set (VmHWM, kB) from /proc/self/status. */
    fun vmHwmKb(): Long? {
        return try {
            File("/proc/self/status").readLines().firstOrNull { it.startsWith("VmHWM:") }
                ?.split(Regex("\\s+"))?.getOrNull(1)?.toLongOrNull()
        } catch (e: Exception) {
            null
        }
    }

    /** Reset VmHWM (writing 5 to clear_refs) so each component gets its own peak; false where not allowed. */
    fun resetPeak(): Boolean {
        return try {
            File("/proc/self/clear_refs").writeText("5")
            true
        } catch (e: Exception) {
            false
        }
    }
}
