# stratus - build, run and test.
#
#   make run     install what is missing, build, start everything, stay in front
#   make test    the same set-up, then every test, ending "N passed, N failed"
#   make bench   performance figures (not part of make test)
#
# Plain `make` builds the binaries and unit tests into $(BUILD).

BUILD   ?= build
CC      ?= gcc
SAN     ?=
PKGS    := libvirt sqlite3 libpq jansson uuid fcgi libsodium
VERSION := $(shell cat VERSION 2>/dev/null || echo 0.1.0)

WARN    := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wstrict-prototypes \
           -Wmissing-prototypes -Wvla
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 $(WARN) -D_GNU_SOURCE -DSTRATUS_VERSION='"$(VERSION)"' \
           -Isrc -Iapp -Itests/unit -Itests -MMD -MP -pthread
LDFLAGS += -pthread
ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

LIB_SRC  := $(sort $(shell find src -name '*.c'))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/libstratus.a

API_SRC  := $(sort $(wildcard app/api/*.c))
API_OBJ  := $(API_SRC:%.c=$(BUILD)/%.o)
API_MAIN := $(BUILD)/app/api/main.o
API_LIB_OBJ := $(filter-out $(API_MAIN),$(API_OBJ))

ADMIN_SRC := $(sort $(wildcard app/admin/*.c))
ADMIN_OBJ := $(ADMIN_SRC:%.c=$(BUILD)/%.o)
WORKER_SRC := $(sort $(wildcard app/worker/*.c))
WORKER_OBJ := $(WORKER_SRC:%.c=$(BUILD)/%.o)

SUPPORT_SRC := $(sort $(wildcard tests/unit/support/*.c))
SUPPORT_OBJ := $(SUPPORT_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

# Contract tests: every repository test, run once per store (scripts/run-unit.sh).
CONTRACT_SUPPORT_SRC := $(sort $(wildcard tests/contract/support/*.c))
CONTRACT_SUPPORT_OBJ := $(CONTRACT_SUPPORT_SRC:%.c=$(BUILD)/%.o)
CONTRACT_SRC := $(sort $(wildcard tests/contract/test_*.c))
CONTRACT_BIN := $(CONTRACT_SRC:tests/contract/%.c=$(BUILD)/contract/%)

BENCH_SRC := $(sort $(wildcard bench/*.c))
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all unit asan lint format run test bench clean deps
all: $(BUILD)/stratus-api $(BUILD)/stratus-admin $(BUILD)/stratus-worker $(UNIT_BIN) $(CONTRACT_BIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/stratus-api: $(API_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(API_OBJ) $(LIB) $(PKG_LIBS) -lm

# stratus-admin shares the API's configuration and composition root, not its main().
$(BUILD)/stratus-admin: $(ADMIN_OBJ) $(API_LIB_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(ADMIN_OBJ) $(API_LIB_OBJ) $(LIB) $(PKG_LIBS) -lm

$(BUILD)/stratus-worker: $(WORKER_OBJ) $(API_LIB_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(WORKER_OBJ) $(API_LIB_OBJ) $(LIB) $(PKG_LIBS) -lm

# Unit tests link the library, the API's objects but its main(), and the support code.
$(BUILD)/tests/%: tests/unit/%.c $(SUPPORT_OBJ) $(API_LIB_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) $(LDFLAGS) -o $@ $< $(SUPPORT_OBJ) $(API_LIB_OBJ) $(LIB) \
		$(PKG_LIBS) $(CMOCKA_LIBS) -lm

$(BUILD)/contract/%: tests/contract/%.c $(CONTRACT_SUPPORT_OBJ) $(SUPPORT_OBJ) $(API_LIB_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) $(LDFLAGS) -o $@ $< $(CONTRACT_SUPPORT_OBJ) $(SUPPORT_OBJ) \
		$(API_LIB_OBJ) $(LIB) $(PKG_LIBS) $(CMOCKA_LIBS) -lm

$(BUILD)/bench/%: bench/%.c $(SUPPORT_OBJ) $(API_LIB_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) $(LDFLAGS) -o $@ $< $(SUPPORT_OBJ) $(API_LIB_OBJ) $(LIB) \
		$(PKG_LIBS) -lm

# Run every unit test program; each prints cmocka's summary.
unit: $(UNIT_BIN) $(CONTRACT_BIN)
	@scripts/run-unit.sh $(BUILD)

asan:
	CFLAGS="-O1 -g" $(MAKE) BUILD=build-asan SAN=1 unit

lint:
	@scripts/lint.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

deps:
	@scripts/deps.sh

run: deps
	$(MAKE) all
	@scripts/run.sh

test: deps
	$(MAKE) all
	@scripts/test.sh

bench: deps
	$(MAKE) all $(BENCH_BIN)
	@scripts/bench.sh

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
