# Two commands on a fresh machine: `make demo` and `make test`. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages the Python wheels need at run time: pyrealsense2 -> libusb, our libspnav binding ->
# libspnav, opencv's GUI wheel -> libGL/glib (xvfb + xdotool: the preview window tests run on a virtual
# screen), PyAV's H.264 encoder ships in its wheel; FFmpeg's shared libraries (Debian 12 names) -> torchcodec,
# with which LeRobot decodes videos in the LeRobot compatibility test's own virtualenv.
SYSTEM_PACKAGES := libusb-1.0-0 libspnav0 libspnav-dev libgl1 libglib2.0-0 xvfb xauth xdotool \
	libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8

# Three pytest workers, a test file each at a time (module fixtures such as a running rig stay in one
# worker): most of the suite waits on the processes it starts (clean clone on 2 cores: 11.0 min with
# 3 workers, 12.2 with 2); the other workers are the "busy processes beside" the tests are written to
# withstand. The longest files start first (tests/conftest.py: LONG_FILES_FIRST; xdist's own order,
# by number of tests, is turned off). `make test PYTEST_PARALLEL=` runs them serially.
PYTEST_PARALLEL := -n 3 --dist loadfile --no-loadscope-reorder

.PHONY: setup system-deps test demo lint bench clean
setup: system-deps $(STAMP)

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml robot/shm/_atomic64.c
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel of torch lies on disk; pin it first so nothing pulls a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	# The compatibility tests' virtualenvs (pip, mostly network) build beside the suite; their tests
	# wait for them on a lock (tests/compat_venv.py).
	@mkdir -p .cache; $(PY) -m tests.compat_venv > .cache/compat-venvs.log 2>&1 & \
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q $(PYTEST_PARALLEL); rc=$$?; wait; exit $$rc
	flock -w 120 /tmp/rig-tests-shm-clean.lock $(VENV)/bin/rig shm clean --quiet

demo: setup
	$(VENV)/bin/rig demo

clean:
	rm -rf $(VENV) runs .pytest_cache
