# longheads — one non-recursive Makefile.  `make help` lists the targets.
#
# Layout of the outputs (everything under build/):
#   build/obj/...         objects (+ .d dependency files), mirroring the source tree
#   build/gen/            protoc-c output (longheads.pb-c.[ch])
#   build/longheadsd      the daemon
#   build/longheads       the CLI
#   build/liblongheads.so.1  the client library
#   build/longheads-<x>   tools/<x>.c (run, ppl, mkmodel, bench, ...)
#   build/test_main       every CUnit suite
#   build/asan/...        the same tree built with ASan + UBSan (`make asan`)

CC       ?= gcc
BUILD    ?= build
MODEL    ?= models/stories260K.gguf
PREFIX   ?= /usr/local
DESTDIR  ?=
SOCKET   ?=

# The daemon's OpenMP wait policy (daemon/main.c): a bounded spin, set in the environment of
# everything started from here (daemon, tools, tests), as the systemd unit sets it.
export GOMP_SPINCOUNT ?= 10000

DEB_PKGS := build-essential pkg-config libdnnl-dev libprotobuf-c-dev protobuf-c-compiler \
            libcunit1-dev systemd libpcre2-dev tmux xz-utils

WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter
ifneq ($(CI),)
WARN     += -Werror
endif
OPT      ?= -O2 -march=native
CFLAGS_ALL = -std=c11 -D_GNU_SOURCE -g $(OPT) $(WARN) -fopenmp -fPIC -MMD -MP \
             -I. -Ikernels -Iengine -Iproto -Idaemon -Iclient -I$(BUILD)/gen $(EXTRA_CFLAGS)
LDLIBS_ALL = -ldnnl -lprotobuf-c -lpcre2-8 -lm -lpthread $(EXTRA_LDFLAGS)

KERNEL_SRCS := $(wildcard kernels/*.c)
ENGINE_SRCS := $(wildcard engine/*.c)
PROTO_SRCS  := $(wildcard proto/*.c) $(BUILD)/gen/longheads.pb-c.c
DAEMON_SRCS := $(filter-out daemon/main.c,$(wildcard daemon/*.c))
CLIB_SRCS   := $(wildcard client/longheads*.c)
CLI_SRCS    := $(wildcard client/cli*.c)
TOOL_SRCS   := $(wildcard tools/*.c)
TEST_SRCS   := $(filter-out tests/fuzz_%.c,$(wildcard tests/*.c))

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(patsubst $(BUILD)/gen/%,gen/%,$(1)))

CORE_OBJS   := $(call obj,$(KERNEL_SRCS) $(ENGINE_SRCS))
PROTO_OBJS  := $(call obj,$(PROTO_SRCS))
DAEMON_OBJS := $(call obj,$(DAEMON_SRCS))
CLIB_OBJS   := $(call obj,$(CLIB_SRCS))
CLI_OBJS    := $(call obj,$(CLI_SRCS))
TEST_OBJS   := $(call obj,$(TEST_SRCS))
TOOLS       := $(patsubst tools/%.c,$(BUILD)/longheads-%,$(TOOL_SRCS))

BINS := $(BUILD)/longheadsd $(BUILD)/longheads $(BUILD)/liblongheads.so.1 $(TOOLS) $(BUILD)/test_main
# tokenizer test vocabularies, stored xz-compressed (tests/data/vocab/README.md)
VOCABS := $(patsubst tests/data/vocab/%.xz,$(BUILD)/vocab/%,$(wildcard tests/data/vocab/*.gguf.xz))

.PHONY: all deps run test check asan bench eval install clean help
.DEFAULT_GOAL := all
# keep the objects of tools/X.c (pattern-rule intermediates) so relinking does not rebuild them
.SECONDARY:

all: $(BINS) $(VOCABS)

help:
	@echo "make deps     install missing Debian packages (apt-get as root; prints the line otherwise)"
	@echo "make          build daemon, CLI, client library, tools and tests into $(BUILD)/"
	@echo "make run      deps + build, then start longheadsd on $(MODEL)"
	@echo "make test     deps + build, then every test suite (CUnit + end-to-end)"
	@echo "make asan     the whole suite built with AddressSanitizer + UndefinedBehaviorSanitizer"
	@echo "make bench    longheads beside llama.cpp (LLAMA_BENCH=path/to/llama-bench), same files"
	@echo "make eval     the README's perplexity and passkey tables -> results/eval.md (~11 min;"
	@echo "              EVAL_FULL=1: also 131072 x20 and full attention there -> results/eval-full.md)"
	@echo "make stress   load test: STRESS_CONNS x STRESS_REQUESTS through the socket, every stream checked"
	@echo "make tsan     the daemon and end-to-end suites under ThreadSanitizer"
	@echo "make fuzz     libFuzzer harnesses (GGUF + tokenizers, frames + protobuf) for FUZZ_TIME s each"
	@echo "make fuzz-ci  each harness for FUZZ_CI_RUNS executions (skipped without clang)"
	@echo "make install  install binaries, library, header, pkg-config file, systemd units"
	@echo "              (PREFIX=$(PREFIX) DESTDIR=$(DESTDIR))"
	@echo "make clean    remove $(BUILD)/"

# ---- set-up: install what is missing from Debian --------------------------------------------
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "deps: installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	  else \
	    echo "deps: missing packages; run as root:"; \
	    echo "  apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

# ---- build --------------------------------------------------------------------------------
$(BUILD)/gen/longheads.pb-c.c $(BUILD)/gen/longheads.pb-c.h: proto/longheads.proto
	@mkdir -p $(BUILD)/gen
	protoc-c --proto_path=proto --c_out=$(BUILD)/gen proto/longheads.proto

# Every object may include the generated header; make sure it exists first.
$(BUILD)/obj/%.o: %.c | $(BUILD)/gen/longheads.pb-c.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Wno-unused-parameter -c $< -o $@

$(BUILD)/libcore.a: $(CORE_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/longheadsd: $(BUILD)/obj/daemon/main.o $(DAEMON_OBJS) $(PROTO_OBJS) $(BUILD)/libcore.a
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/liblongheads.so.1: $(CLIB_OBJS) $(PROTO_OBJS)
	$(CC) $(CFLAGS_ALL) -shared -Wl,-soname,liblongheads.so.1 -o $@ $^ -lprotobuf-c -lpthread
	ln -sf liblongheads.so.1 $(BUILD)/liblongheads.so

$(BUILD)/longheads: $(CLI_OBJS) $(BUILD)/liblongheads.so.1
	$(CC) $(CFLAGS_ALL) -o $@ $(CLI_OBJS) -L$(BUILD) -l:liblongheads.so.1 -Wl,-rpath,'$$ORIGIN' -lm -lpthread

$(BUILD)/longheads-%: $(BUILD)/obj/tools/%.o $(BUILD)/libcore.a
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

# the daemon-level benchmark is a client of longheadsd: the client library, not the engine
$(BUILD)/longheads-dbench: $(BUILD)/obj/tools/dbench.o $(CLIB_OBJS) $(PROTO_OBJS)
	$(CC) $(CFLAGS_ALL) -o $@ $^ -lprotobuf-c -lpthread

$(BUILD)/test_main: $(TEST_OBJS) $(DAEMON_OBJS) $(PROTO_OBJS) $(CLIB_OBJS) $(BUILD)/libcore.a
	$(CC) $(CFLAGS_ALL) -o $@ $^ -lcunit $(LDLIBS_ALL)

$(BUILD)/vocab/%.gguf: tests/data/vocab/%.gguf.xz
	@mkdir -p $(BUILD)/vocab
	xz -dc $< > $@.tmp && mv $@.tmp $@

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---- run / test ---------------------------------------------------------------------------
run: deps all
	@echo "longheadsd: serving $(MODEL); talk to it with:"
	@echo "  $(BUILD)/longheads generate 'Once upon a time'"
	@echo "  $(BUILD)/longheads chat"
	@echo "  $(BUILD)/longheads info    (Ctrl-C here stops the daemon)"
	$(BUILD)/longheadsd --model $(MODEL) $(if $(SOCKET),--socket $(SOCKET))

# LH_BUILD tells the tests where the binaries are (end-to-end suites start the real daemon).
test: deps all
	LH_BUILD=$(BUILD) LH_MODEL=$(MODEL) $(BUILD)/test_main
	LH_BUILD=$(BUILD) LH_MODEL=$(MODEL) sh tests/cli.sh
	LH_BUILD=$(BUILD) LH_MODEL=$(MODEL) sh tests/chat-tty.sh
	sh tests/readme.sh
	sh tests/evaltables.sh

check: test

asan: deps
	$(MAKE) BUILD=build/asan OPT="-O1 -march=native -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" all
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  LH_BUILD=build/asan LH_MODEL=$(MODEL) LH_ASAN=1 build/asan/test_main

# make bench: the output also goes to results/bench.txt (with the commit), which the README quotes.
bench: deps all
	@mkdir -p results
	@{ echo "commit $$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)'); LLAMA_BENCH=$${LLAMA_BENCH:-}"; \
	   echo "machine: $$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $$(nproc) cores, $$(awk '/MemTotal/ {printf "%.1f GiB", $$2/1048576}' /proc/meminfo)"; \
	   sh tools/bench.sh $(BUILD); } 2>&1 | tee results/bench.txt.part; \
	  rc=$$?; mv results/bench.txt.part results/bench.txt; exit $$rc

# the README's evaluation tables, written to results/eval.md (EVAL_FULL=1: the long version,
# results/eval-full.md); tools/eval.sh says what runs and how long it takes
eval: deps all
	LH_EVAL_FULL=$(EVAL_FULL) sh tools/eval.sh $(BUILD)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/share/longheads \
	  $(DESTDIR)$(PREFIX)/lib/systemd/system
	install -m 755 $(BUILD)/longheadsd $(BUILD)/longheads $(DESTDIR)$(PREFIX)/bin/
	install -m 755 $(BUILD)/longheads-run $(BUILD)/longheads-ppl $(DESTDIR)$(PREFIX)/bin/
	install -m 755 $(BUILD)/liblongheads.so.1 $(DESTDIR)$(PREFIX)/lib/
	ln -sf liblongheads.so.1 $(DESTDIR)$(PREFIX)/lib/liblongheads.so
	install -m 644 client/longheads.h $(DESTDIR)$(PREFIX)/include/
	sed -e 's|@PREFIX@|$(PREFIX)|g' client/longheads.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/longheads.pc
	install -m 644 $(MODEL) $(DESTDIR)$(PREFIX)/share/longheads/
	sed -e 's|@PREFIX@|$(PREFIX)|g' contrib/systemd/longheadsd.service.in \
	  > $(DESTDIR)$(PREFIX)/lib/systemd/system/longheadsd.service
	install -m 644 contrib/systemd/longheadsd.socket $(DESTDIR)$(PREFIX)/lib/systemd/system/

clean:
	rm -rf $(BUILD)

# ---- fuzzing (explicit only; needs clang with libFuzzer: apt-get install -y clang) ---------------
# make fuzz: build the harnesses and run each for FUZZ_TIME seconds on its corpus under
# $(BUILD)/fuzz-corpus-<name>; FUZZ_ARGS adds libFuzzer options.  Not part of `make test`.
#   fuzz_gguf   GGUF reader + tokenizer (tests/fuzz_gguf.c)
#   fuzz_frame  frame reader in pieces + protobuf unpack of Request and every request body, with
#               a bounded allocator (tests/fuzz_frame.c)
# make fuzz-ci: each harness for FUZZ_CI_RUNS executions (seconds), skipped when clang is absent.
FUZZ_CC      ?= clang
FUZZ_TIME    ?= 60
FUZZ_ARGS    ?=
FUZZ_CI_RUNS ?= 20000
FUZZ_FLAGS   := -std=c11 -D_GNU_SOURCE -g -O1 $(WARN) -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=undefined
FUZZERS      := $(BUILD)/fuzz_gguf $(BUILD)/fuzz_frame
.PHONY: fuzz fuzz-ci
fuzz: $(FUZZERS) $(VOCABS)
	@for f in $(notdir $(FUZZERS)); do \
	  mkdir -p $(BUILD)/fuzz-corpus-$$f; \
	  echo "fuzz: $$f for $(FUZZ_TIME) s (log: $(BUILD)/$$f.log)"; \
	  LH_MODEL=$(MODEL) LH_FUZZ_VOCAB_DIR=$(BUILD)/vocab $(BUILD)/$$f -max_total_time=$(FUZZ_TIME) -max_len=65536 \
	    -print_final_stats=1 $(FUZZ_ARGS) $(BUILD)/fuzz-corpus-$$f > $(BUILD)/$$f.log 2>&1; \
	  rc=$$?; grep -E "number_of_executed_units|average_exec_per_sec|ERROR|SUMMARY|crash-" \
	    $(BUILD)/$$f.log; \
	  [ $$rc -eq 0 ] || { echo "fuzz: $$f FAILED"; exit 1; }; \
	done

fuzz-ci:
	@if ! command -v $(FUZZ_CC) >/dev/null 2>&1; then echo "fuzz-ci: SKIP: $(FUZZ_CC) not installed"; exit 0; fi; \
	$(MAKE) --no-print-directory $(FUZZERS) $(VOCABS) || exit 1; \
	for f in $(notdir $(FUZZERS)); do \
	  LH_MODEL=$(MODEL) LH_FUZZ_VOCAB_DIR=$(BUILD)/vocab $(BUILD)/$$f -runs=$(FUZZ_CI_RUNS) -max_len=4096 > $(BUILD)/$$f-ci.log 2>&1 \
	    || { tail -30 $(BUILD)/$$f-ci.log; echo "fuzz-ci: $$f FAILED"; exit 1; }; \
	  echo "fuzz-ci: $$f: $(FUZZ_CI_RUNS) runs, no finding"; \
	done

$(BUILD)/fuzz_gguf: tests/fuzz_gguf.c engine/gguf.c engine/tokenizer.c kernels/log.c kernels/quant.c \
                    engine/gguf.h engine/tokenizer.h kernels/quant.h kernels/log.h
	@mkdir -p $(BUILD)
	$(FUZZ_CC) $(FUZZ_FLAGS) -Ikernels -Iengine -o $@ $(filter %.c,$^) -lpcre2-8 -lm -lpthread

$(BUILD)/fuzz_frame: tests/fuzz_frame.c proto/frame.c kernels/log.c $(BUILD)/gen/longheads.pb-c.c \
                     proto/frame.h kernels/log.h
	@mkdir -p $(BUILD)
	$(FUZZ_CC) $(FUZZ_FLAGS) -Wno-unused-parameter -Ikernels -Iproto -I$(BUILD)/gen -o $@ \
	  $(filter %.c,$^) -lprotobuf-c -lpthread

# ---- load test (explicit only) -------------------------------------------------------------------
# make stress: longheads-stress starts the daemon and runs STRESS_ROUNDS rounds of STRESS_CONNS
# connections x STRESS_REQUESTS requests (10% cancelled, 5% dropped mid-stream), checking every
# stream; prints req/s, TTFT p50/p99, errors by code, daemon RSS.  The issue's figure:
#   make stress STRESS_CONNS=64 STRESS_REQUESTS=100 STRESS_SLOTS=4
STRESS_CONNS    ?= 16
STRESS_REQUESTS ?= 20
STRESS_ROUNDS   ?= 2
STRESS_SLOTS    ?= 1
.PHONY: stress
$(BUILD)/longheads-stress: $(BUILD)/obj/tools/stress.o $(PROTO_OBJS)
	$(CC) $(CFLAGS_ALL) -o $@ $^ -lprotobuf-c -lpthread

stress: all
	$(BUILD)/longheads-stress --daemon $(BUILD)/longheadsd --model $(MODEL) \
	  --slots $(STRESS_SLOTS) --conns $(STRESS_CONNS) --requests $(STRESS_REQUESTS) \
	  --rounds $(STRESS_ROUNDS)

# ---- ThreadSanitizer (explicit only) --------------------------------------------------------------
# make tsan: the daemon, client library and tests built with -fsanitize=thread under build/tsan,
# then the scheduler and end-to-end suites (the daemon they start is the TSan build too; its
# reports land in the daemon's log and fail the suites through halt_on_error + exit status).
# OMP_NUM_THREADS=1: libgomp is not instrumented, so its barriers would look like races between
# its workers; with one thread it starts none and TSan checks our own threads (poll loop, compute,
# prep, clients).  tests/tsan.supp explains each suppression.
.PHONY: tsan
tsan: deps
	$(MAKE) BUILD=build/tsan OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=thread" all
	TSAN_OPTIONS="suppressions=$(CURDIR)/tests/tsan.supp halt_on_error=1 exitcode=66" \
	  OMP_NUM_THREADS=1 LH_BUILD=build/tsan LH_MODEL=$(MODEL) LH_ASAN=1 build/tsan/test_main daemon e2e
