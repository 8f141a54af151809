# flashtile: the two quick-start commands.
#   make demo  -- check against the float64 reference and benchmark on whatever device is here
#   make test  -- the test suite (Triton kernels in interpreter mode when there is no GPU)
# Both set up their own Python environment first (scripts/python.sh).

PYTEST_ARGS ?= -q -n 2 --durations=10

.PHONY: demo test test-gpu info

demo:
	@PY=$$(scripts/python.sh) && export PYTHONPATH=$(CURDIR) && \
	$$PY -m flashtile info && $$PY -m flashtile check && $$PY -m flashtile bench

test:
	@PY=$$(scripts/python.sh) && PYTHONPATH=$(CURDIR) $$PY -m pytest $(PYTEST_ARGS)

# The GPU suite alone (what `device` runs on a Hopper machine).
test-gpu:
	@PY=$$(scripts/python.sh) && PYTHONPATH=$(CURDIR) $$PY -m pytest -q -m gpu tests

info:
	@PY=$$(scripts/python.sh) && PYTHONPATH=$(CURDIR) $$PY -m flashtile info
