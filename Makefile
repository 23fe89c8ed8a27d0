# linktr — the front door. Everything real lives in CMake and deploy/local.
#
#   make build      install missing Debian packages (as root), configure, build
#   make run        build, then the local stack in the foreground (Ctrl-C stops it)
#   make test       build, then every test (unit + integration) through ctest
#   make test-asan  the same with AddressSanitizer and UBSan, in build-asan/
#   make test-kafka the integration suite against a real Apache Kafka broker
#                   (deploy/kafka: fetched from Maven Central once; needs Java 17)
#   make fuzz       every libFuzzer harness for FUZZ_SECONDS (default 60) each
#   make lint       cppcheck and clang-tidy over the tree
#   make format     clang-format every C file; make format-check only reports
#   make compare    a Release build (build-release/) against the seed's Django
#                   stack: bench/compare, ../shared/peer/compare, one ratio table
#   make clean      stop running stacks and delete build trees and .run/
#
# Variables: CMAKE_FLAGS (extra -D options), JOBS (default 2), CI=true turns
# warnings into errors. The environment reaches the stack: RATE_LIMITS=off make run.

SHELL := /bin/bash
BUILD_DIR := build
ASAN_DIR := build-asan
JOBS ?= 2
CMAKE_FLAGS ?=
CTEST_FLAGS ?=

# Always explicit, so a CI run does not leave -Werror in a developer's cache.
WERROR := $(if $(filter true,$(CI)),ON,OFF)

CONFIGURE = cmake -S . -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLINKTR_WERROR=$(WERROR) $(CMAKE_FLAGS)
CTEST = ctest --output-on-failure --timeout 300 $(CTEST_FLAGS)

.PHONY: all deps build run compare test test-kafka build-asan test-asan fuzz lint format format-check clean

all: build

deps:
	deploy/local/deps

build: deps
	$(CONFIGURE) -B $(BUILD_DIR)
	cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	LINKTR_BUILD_DIR="$(CURDIR)/$(BUILD_DIR)" exec deploy/local/stack run

# A Release tree of its own; RATE_LIMITS=off REFERRAL_DAILY_CAP=1000000.
compare: deps
	bench/compare $(COMPARE_SECONDS) $(COMPARE_CONNECTIONS)

test: build
	$(CTEST) --test-dir $(BUILD_DIR)

# The same integration suite, with the stack pointed at a real broker.
test-kafka: build
	LINKTR_BUILD_DIR="$(CURDIR)/$(BUILD_DIR)" deploy/kafka/kafka with $(BUILD_DIR)/kafka-run -- \
	  $(CTEST) --test-dir $(BUILD_DIR) -L integration

build-asan: deps
	$(CONFIGURE) -DLINKTR_SANITIZE=ON -B $(ASAN_DIR)
	cmake --build $(ASAN_DIR) -j $(JOBS)

# The stacks the fixtures start inherit these, so the services run with
# them too; what a service reports (a leak at exit, say) lands in its log,
# so the logs are searched afterwards.
test-asan: build-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	$(CTEST) --test-dir $(ASAN_DIR)
	@if grep -lE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' \
	    $(ASAN_DIR)/*-run/logs/*.log 2>/dev/null; then \
	  echo "sanitizer reports in the service logs above"; exit 1; fi

FUZZ_SECONDS ?= 60
C_FILES = $(shell git ls-files '*.c' '*.h')

fuzz: deps
	tests/fuzz/run $(FUZZ_SECONDS)

lint: deps
	tests/lint/run

format:
	@clang-format -i $(C_FILES)

format-check:
	@clang-format --dry-run --Werror $(C_FILES) && echo "format-check: $(words $(C_FILES)) files follow .clang-format"

# Stop the stacks and databases that may run from the trees before deleting
# them, so nothing is left running with its files gone.
clean:
	-deploy/local/stack stop
	-for d in $(BUILD_DIR) $(ASAN_DIR); do \
	  [ -d "$$d" ] || continue; \
	  LINKTR_RUN_DIR="$$d/itest-run" deploy/local/stack stop; \
	  LINKTR_RUN_DIR="$$d/ctrlc-run" deploy/local/stack stop; \
	  deploy/local/pg stop "$$d/utest-pg"; \
	  deploy/kafka/kafka stop "$$d/kafka-run"; \
	done
	rm -rf $(BUILD_DIR) $(ASAN_DIR) build-fuzz build-lint .run
