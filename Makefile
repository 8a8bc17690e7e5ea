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

# app/common: what every program shares (configuration, log, store, composition root).
COMMON_SRC := $(sort $(wildcard app/common/*.c))
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)
API_SRC  := $(sort $(wildcard app/api/*.c))
API_OBJ  := $(API_SRC:%.c=$(BUILD)/%.o)
API_MAIN := $(BUILD)/app/api/main.o
API_LIB_OBJ := $(filter-out $(API_MAIN),$(API_OBJ)) $(COMMON_OBJ)

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

$(BUILD)/stratus-api: $(API_OBJ) $(COMMON_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(API_OBJ) $(COMMON_OBJ) $(LIB) $(PKG_LIBS) -lm

# stratus-admin and stratus-worker share app/common, nothing of the HTTP side.
$(BUILD)/stratus-admin: $(ADMIN_OBJ) $(COMMON_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(ADMIN_OBJ) $(COMMON_OBJ) $(LIB) $(PKG_LIBS) -lm

$(BUILD)/stratus-worker: $(WORKER_OBJ) $(COMMON_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(WORKER_OBJ) $(COMMON_OBJ) $(LIB) $(PKG_LIBS) -lm

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

# ---- install ---------------------------------------------------------------
# make install [DESTDIR=] [PREFIX=/usr/local] [SYSCONFDIR=/etc] [SYSTEMDDIR=/lib/systemd/system]
#
# The binaries, the systemd units (stratus-api.socket, stratus-api.service,
# stratus-worker.service), an nginx site and a production stratus.conf; see
# docs/deploy.md.  Units are always replaced (local changes go in drop-ins).
# stratus.conf and the nginx site are operators' files: one that exists and
# differs is kept, and the new version goes beside it as <name>.dist.
# `make uninstall` removes what install wrote, except a stratus.conf or site
# that was changed; the state in /var/lib/stratus is never touched.
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
SYSTEMDDIR ?= /lib/systemd/system
DESTDIR    ?=

INSTALL_BINS  := stratus-api stratus-worker stratus-admin
INSTALL_UNITS := stratus-api.socket stratus-api.service stratus-worker.service
INSTALL_SED    = sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g'
INSTALL_CONF   = $(DESTDIR)$(SYSCONFDIR)/stratus/stratus.conf
INSTALL_SITE   = $(DESTDIR)$(SYSCONFDIR)/nginx/sites-available/stratus
INSTALL_DOC    = $(DESTDIR)$(PREFIX)/share/doc/stratus

# $(call install_keep,TEMPLATE,TARGET,MODE): TARGET from TEMPLATE unless an
# edited TARGET exists; then TARGET.dist.
define install_keep
	@set -e; t="$(2)"; $(INSTALL_SED) $(1) >"$$t.tmp"; chmod $(3) "$$t.tmp"; \
	if [ ! -e "$$t" ]; then mv "$$t.tmp" "$$t"; echo "install: $$t"; \
	elif cmp -s "$$t.tmp" "$$t"; then rm -f "$$t.tmp" "$$t.dist"; echo "install: $$t (unchanged)"; \
	else mv "$$t.tmp" "$$t.dist"; echo "install: kept $$t; the new version is $$t.dist"; fi
endef

# $(call uninstall_keep,TEMPLATE,TARGET): remove TARGET unless it was edited.
define uninstall_keep
	@set -e; t="$(2)"; rm -f "$$t.dist"; \
	if [ -e "$$t" ] && ! $(INSTALL_SED) $(1) | cmp -s - "$$t"; then \
	    echo "uninstall: kept $$t (changed since install)"; else rm -f "$$t"; fi
endef

.PHONY: install uninstall
install: $(INSTALL_BINS:%=$(BUILD)/%)
	install -d -m 0755 "$(DESTDIR)$(PREFIX)/bin" "$(DESTDIR)$(SYSTEMDDIR)" \
		"$(DESTDIR)$(SYSCONFDIR)/nginx/sites-available" "$(INSTALL_DOC)"
	install -d -m 0750 "$(DESTDIR)$(SYSCONFDIR)/stratus"
	install -m 0755 $(INSTALL_BINS:%=$(BUILD)/%) "$(DESTDIR)$(PREFIX)/bin/"
	@set -e; for u in $(INSTALL_UNITS); do \
	    $(INSTALL_SED) dist/$$u >"$(DESTDIR)$(SYSTEMDDIR)/$$u.tmp"; \
	    chmod 0644 "$(DESTDIR)$(SYSTEMDDIR)/$$u.tmp"; \
	    mv "$(DESTDIR)$(SYSTEMDDIR)/$$u.tmp" "$(DESTDIR)$(SYSTEMDDIR)/$$u"; \
	    echo "install: $(DESTDIR)$(SYSTEMDDIR)/$$u"; \
	done
	install -m 0644 docs/deploy.md "$(INSTALL_DOC)/deploy.md"
	$(call install_keep,dist/stratus.conf,$(INSTALL_CONF),0640)
	$(call install_keep,dist/nginx-stratus.conf,$(INSTALL_SITE),0644)

uninstall:
	rm -f $(INSTALL_BINS:%="$(DESTDIR)$(PREFIX)/bin/%") $(INSTALL_UNITS:%="$(DESTDIR)$(SYSTEMDDIR)/%")
	rm -f "$(INSTALL_DOC)/deploy.md"
	@rmdir "$(INSTALL_DOC)" 2>/dev/null || true
	$(call uninstall_keep,dist/stratus.conf,$(INSTALL_CONF))
	@rmdir "$(DESTDIR)$(SYSCONFDIR)/stratus" 2>/dev/null || true
	@# The enabled site goes with it: nginx refuses to start on a dangling link.
	@l="$(DESTDIR)$(SYSCONFDIR)/nginx/sites-enabled/stratus"; \
	case "$$(readlink "$$l" 2>/dev/null)" in \
	../sites-available/stratus | $(SYSCONFDIR)/nginx/sites-available/stratus) \
	    rm -f "$$l"; echo "uninstall: removed $$l; reload nginx" ;; \
	esac
	$(call uninstall_keep,dist/nginx-stratus.conf,$(INSTALL_SITE))
	@echo "uninstall: stop the units first (systemctl disable --now stratus-api.socket" \
	    "stratus-api.service stratus-worker.service), then systemctl daemon-reload"

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
