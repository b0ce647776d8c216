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
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q
	$(VENV)/bin/rig shm clean --quiet

demo: setup
	$(VENV)/bin/rig demo

clean:
	rm -rf $(VENV) runs .pytest_cache
