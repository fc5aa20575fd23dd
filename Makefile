PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: setup test test-unit test-integration test-e2e test-heavy test-slow lint clean

# One command installs everything (editable package + pinned deployment stack + test tools).
setup:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (mi2v needs Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip==26.3
	$(PIP) install --quiet -e '.[dev,docs,litert]'
	$(PIP) check

# One worker per core; a test file stays on one worker (module fixtures, the private adb servers, Ray's cluster).
test:
	$(VENV)/bin/pytest -q -n auto --dist loadfile --durations=25

# The tiers by folder (docs/testing.md): unit (in-process, about a minute), integration (tiny exports, this
# machine's runtimes, the CLI in a subprocess), e2e (the simulated phone over real adb, the apps, release plans).
test-unit:
	$(VENV)/bin/pytest -q -n auto --dist loadfile tests/unit

test-integration:
	$(VENV)/bin/pytest -q -n auto --dist loadfile tests/integration

test-e2e:
	$(VENV)/bin/pytest -q -n auto --dist loadfile tests/e2e

# The tiny-preset workflows `make test` leaves out to stay within 15 minutes (marker `heavy`); CI runs them.
test-heavy:
	$(VENV)/bin/pytest -q -n auto --dist loadfile --durations=10 -m 'heavy and not slow'

test-slow:
	$(VENV)/bin/pytest -q -m slow

lint:
	$(VENV)/bin/ruff check mi2v_export exporters attention_kernels tests benchmarks

# The docs site (docs/, mkdocs.yml) in strict mode: any warning fails. The CLI reference, the file-format references,
# the tables the code owns and the results pages are generated during the build (docs/gen/); site/ is git-ignored.
.PHONY: docs
docs:
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache artifacts apps/android/app/build apps/android/.gradle apps/ios/.build
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# --- phone apps (issue 7): prerequisite checks first, one-line errors ---------------------------------------
.PHONY: android android-install ios

# Android benchmark app (apps/android): JDK 17 + Android SDK (ANDROID_HOME); VARIANT=vulkan for the Vulkan AAR.
android:
	$(VENV)/bin/mi2v app build android $(if $(VARIANT),--variant $(VARIANT))

android-install:
	@test -n "$(SERIAL)" || { echo "error: name the phone: make android-install SERIAL=<serial from adb devices>"; exit 2; }
	$(VENV)/bin/mi2v app install --serial $(SERIAL)

# iOS Core ML benchmark (apps/ios): macOS with Xcode 15+ only; TEAM=<Apple development team id>.
ios:
	$(VENV)/bin/mi2v app build ios $(if $(TEAM),--team $(TEAM))

# --- export, benchmarks, simulated phone ---------------------------------------------------------------------
.PHONY: artifacts bench bench-device bench-attention simulate

ARTIFACTS ?= artifacts
EXPORT := $(VENV)/bin/mi2v export --preset tiny --component all

# The tiny preset on every target that lowers here, one folder per target/delegate, then a manifest check.
artifacts:
	rm -rf $(ARTIFACTS)
	$(EXPORT) --target onnx --out $(ARTIFACTS)/onnx
	$(EXPORT) --target executorch --delegate xnnpack --out $(ARTIFACTS)/executorch-xnnpack
	$(EXPORT) --target executorch --delegate vulkan --out $(ARTIFACTS)/executorch-vulkan
	$(EXPORT) --target executorch --delegate coreml --out $(ARTIFACTS)/executorch-coreml
	$(EXPORT) --target coreml --out $(ARTIFACTS)/coreml
	$(EXPORT) --target onnx --delegate qnn --soc SM8650 --out $(ARTIFACTS)/onnx-qnn
	$(EXPORT) --target litert --out $(ARTIFACTS)/litert
	$(EXPORT) --target litert --delegate gpu --out $(ARTIFACTS)/litert-gpu
	$(PY) .ci/check_manifest.py $(ARTIFACTS)

# Host benchmark of the tiny artifacts (exports them first when missing).
bench:
	@test -f $(ARTIFACTS)/executorch-xnnpack/manifest.json || $(EXPORT) --target executorch --delegate xnnpack --out $(ARTIFACTS)/executorch-xnnpack
	@test -f $(ARTIFACTS)/onnx/manifest.json || $(EXPORT) --target onnx --out $(ARTIFACTS)/onnx
	$(VENV)/bin/mi2v bench --artifacts $(ARTIFACTS)/onnx --device host --report $(ARTIFACTS)/bench-host-onnx.json
	$(VENV)/bin/mi2v bench --artifacts $(ARTIFACTS)/executorch-xnnpack --device host --report $(ARTIFACTS)/bench-host-xnnpack.json

# A phone: make bench-device SERIAL=<serial> [DIR=folder of artifacts] [RUNNER=path/to/executor_runner]
bench-device:
	@test -n "$(SERIAL)" || { echo "error: name the phone: make bench-device SERIAL=<serial from adb devices>"; exit 2; }
	$(VENV)/bin/mi2v bench --artifacts $(or $(DIR),$(ARTIFACTS)/executorch-xnnpack) --device adb:$(SERIAL) \
		$(if $(RUNNER),--runner $(RUNNER)) --report $(ARTIFACTS)/bench-$(SERIAL).json

# Reference vs rewritten attention on onnxruntime and ExecuTorch XNNPACK (QUICK=1 for toy sizes).
bench-attention:
	$(PY) benchmarks/attention.py $(if $(QUICK),--quick) --json $(ARTIFACTS)/bench-attention.json

# A simulated phone that the real adb lists after `adb connect 127.0.0.1:PORT`.
simulate:
	$(VENV)/bin/mi2v devices simulate --port $(or $(PORT),0)

# --- test vectors: check artifacts on this machine's runtimes (no model, no checkpoint) ---------------------------
.PHONY: verify verify-setup

# Every artifacts folder under DIR (a folder with manifest.json, or a tree of them) on every runtime available here;
# RUNTIME=onnxruntime (or executorch-xnnpack, coreml-cpu_only, …) limits it to one. Exit 4 when one fails.
verify:
	@test -n "$(DIR)" || { echo "error: name the folder: make verify DIR=artifacts (or artifacts/onnx)"; exit 2; }
	@test -d "$(DIR)" || { echo "error: $(DIR): no such folder"; exit 2; }
	@rc=0; found=0; for m in $$(find $(DIR) -name manifest.json | sort); do found=1; \
		echo "== $$(dirname $$m)"; $(VENV)/bin/mi2v verify $$(dirname $$m) $(if $(RUNTIME),--runtime $(RUNTIME)) || rc=$$?; \
	done; test $$found = 1 || { echo "error: no manifest.json under $(DIR)"; exit 2; }; exit $$rc

# A torch-free install for `mi2v verify` of ONNX artifacts (the pins of pyproject's `verify` extra).
verify-setup:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (mi2v needs Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip==26.3
	$(PIP) install --quiet --no-deps -e .
	$(PY) -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['verify']))" > $(VENV)/verify-requirements.txt
	$(PIP) install --quiet -r $(VENV)/verify-requirements.txt
