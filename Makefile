PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: setup test test-slow lint clean

# One command installs everything (editable package + pinned deployment stack + test tools).
setup:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (mi2v needs Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip==26.3
	$(PIP) install --quiet -e '.[dev]'
	$(PIP) check

test:
	$(VENV)/bin/pytest -q

test-slow:
	$(VENV)/bin/pytest -q -m slow

lint:
	$(VENV)/bin/ruff check mi2v_export exporters kernels tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache artifacts apps/android/app/build apps/android/.gradle apps/ios/.build
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# --- phone apps (issue 7): prerequisite checks first, one-line errors ---------------------------------------
.PHONY: android android-install ios

# Android benchmark app (apps/android): JDK 17 + Android SDK (ANDROID_HOME); VARIANT=vulkan for the Vulkan AAR.
android:
	$(PY) -m mi2v_export.devices.android_app build $(if $(VARIANT),--variant $(VARIANT))

android-install:
	@test -n "$(SERIAL)" || { echo "error: name the phone: make android-install SERIAL=<serial from adb devices>"; exit 2; }
	$(PY) -m mi2v_export.devices.android_app install --serial $(SERIAL)

# iOS Core ML benchmark (apps/ios): macOS with Xcode 15+ only; TEAM=<Apple development team id>.
ios:
	$(PY) -m mi2v_export.devices.ios build $(if $(TEAM),--team $(TEAM))
