# portico — two commands do everything on a fresh Debian 12 machine:
#   make demo   install what is missing, build, run the load-balancer example on 127.0.0.1:6188
#   make test   install what is missing, build, run every test, then again under ASan+UBSan

JOBS      ?= 2
BUILD     ?= build
ASAN_BUILD?= build-asan
CMAKE_GEN := -G Ninja
LAUNCHER  := $(if $(shell command -v ccache 2>/dev/null),-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache,)

# Debian packages the build, the tests and the demo need. Nothing else is downloaded.
PACKAGES := cmake ninja-build g++ make pkg-config ccache curl \
            libboost1.81-dev node-llhttp libnghttp2-dev libssl-dev libfmt-dev libspdlog-dev \
            libyaml-cpp-dev libcli11-dev zlib1g-dev libgtest-dev libgmock-dev libbenchmark-dev \
            clang-14 libclang-rt-14-dev python3 python3-prometheus-client openssl \
            python3-h2 python3-hyperframe python3-hpack python3-grpcio libmimalloc-dev \
            liburing-dev

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: deps build test test-fast test-asan fuzz demo bench clean
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60

deps:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) $(CMAKE_GEN) $(LAUNCHER) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPORTICO_BUILD_BENCH=ON

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600

$(ASAN_BUILD)/build.ninja:
	cmake -S . -B $(ASAN_BUILD) $(CMAKE_GEN) $(LAUNCHER) -DCMAKE_BUILD_TYPE=Debug -DPORTICO_SANITIZE=ON \
	  -DPORTICO_BUILD_BENCH=OFF

test-asan: deps $(ASAN_BUILD)/build.ninja
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) --timeout 900

# libFuzzer (clang) on the HTTP/1 parser, the HPACK decoder and the HTTP/2 session, FUZZ_SECONDS
# each; a crash fails the run.
fuzz: deps
	CC=clang-14 CXX=clang++-14 cmake -S . -B $(FUZZ_BUILD) $(CMAKE_GEN) $(LAUNCHER) \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPORTICO_BUILD_FUZZ=ON -DPORTICO_BUILD_TESTS=OFF \
	  -DPORTICO_BUILD_EXAMPLES=OFF
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target h1_parser_fuzz hpack_fuzz h2_session_fuzz
	mkdir -p $(FUZZ_BUILD)/corpus && cp tests/fuzz/corpus/* $(FUZZ_BUILD)/corpus/
	./$(FUZZ_BUILD)/tests/fuzz/h1_parser_fuzz -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	  -rss_limit_mb=2048 -print_final_stats=1 $(FUZZ_BUILD)/corpus
	mkdir -p $(FUZZ_BUILD)/corpus_hpack && cp tests/fuzz/corpus_hpack/* $(FUZZ_BUILD)/corpus_hpack/
	./$(FUZZ_BUILD)/tests/fuzz/hpack_fuzz -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	  -rss_limit_mb=2048 -print_final_stats=1 $(FUZZ_BUILD)/corpus_hpack
	mkdir -p $(FUZZ_BUILD)/corpus_h2 && cp tests/fuzz/corpus_h2/* $(FUZZ_BUILD)/corpus_h2/
	./$(FUZZ_BUILD)/tests/fuzz/h2_session_fuzz -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	  -rss_limit_mb=2048 -print_final_stats=1 $(FUZZ_BUILD)/corpus_h2

test: test-fast test-asan fuzz

demo: build
	./$(BUILD)/examples/load_balancer

bench: build
	bash bench/e2e/run.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
