// The benchmark app (org.mi2v.bench) and its instrumentation test (org.mi2v.bench.test).
//
//   ./gradlew assembleDebug assembleDebugAndroidTest        (make android)
//   ./gradlew testDebugUnitTest                              (JVM tests of the report/statistics code)
//   -Pmi2v.executorchVariant=vulkan                          (ExecuTorch AAR with the Vulkan backend)
plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

val executorchVersion: String = providers.gradleProperty("mi2v.executorchVersion").getOrElse("1.5.1")
val executorchVariant: String = providers.gradleProperty("mi2v.executorchVariant").getOrElse("xnnpack")
val executorchArtifact: String = when (executorchVariant) {
    "xnnpack" -> "executorch-android"
    "vulkan" -> "executorch-android-vulkan"
    else -> throw GradleException("mi2v.executorchVariant=$executorchVariant: use xnnpack or vulkan")
}

android {
    namespace = "org.mi2v.bench"
    compileSdk = 35

    defaultConfig {
        applicationId = "org.mi2v.bench"
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        testApplicationId = "org.mi2v.bench.test"
        testInstrumentationRunner = "androidx.test.runner.AndroidJUnitRunner"
        buildConfigField("String", "EXECUTORCH_VERSION", "\"$executorchVersion\"")
        buildConfigField("String", "EXECUTORCH_ARTIFACT", "\"org.pytorch:$executorchArtifact\"")
        ndk {
            // The ExecuTorch AAR ships these two ABIs.
            abiFilters += listOf("arm64-v8a", "x86_64")
        }
    }

    buildFeatures {
        buildConfig = true
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    kotlinOptions {
        jvmTarget = "17"
    }

    testOptions {
        unitTests.isReturnDefaultValues = true
    }
}

dependencies {
    // ExecuTorch's published Android library (Java/Kotlin API + libexecutorch.so); it brings fbjni and soloader.
    implementation("org.pytorch:$executorchArtifact:$executorchVersion")

    testImplementation("junit:junit:4.13.2")

    androidTestImplementation("androidx.test:runner:1.6.2")
    androidTestImplementation("androidx.test:core:1.6.1")
    androidTestImplementation("androidx.test.ext:junit:1.2.1")
    androidTestImplementation("junit:junit:4.13.2")
}
