# Installing from source (docs/install.md). The packages are the other way:
# `make packages` (= packaging/build) builds them into target/packages/.
#
#   make                                   cargo build --release (programs and C library)
#   sudo make install PREFIX=/usr/local    programs, systemd units, /etc/cops/cops.json,
#                                          sysusers file, docs, and the C library
#   sudo make uninstall PREFIX=/usr/local
#   make packages
#
# DESTDIR is honoured. The units are installed with their paths rewritten to
# BINDIR, SYSCONFDIR and DOCDIR; after installing into the running system:
#   systemd-sysusers && systemctl daemon-reload && ldconfig

PREFIX      ?= /usr/local
DESTDIR     ?=
BINDIR      ?= $(PREFIX)/bin
SYSCONFDIR  ?= /etc
DOCDIR      ?= $(PREFIX)/share/doc
UNITDIR     ?= $(SYSCONFDIR)/systemd/system
SYSUSERSDIR ?= $(SYSCONFDIR)/sysusers.d
CARGO       ?= cargo
TARGET_DIR  ?= $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
BUILT       := $(TARGET_DIR)/release

PROGRAMS := fims_server fims_send fims_listen cops
UNITS    := fims_server.service cops.service cops-monitored@.service
# The paths the units carry (those of the packages), and what they become here.
UNIT_SED := -e 's|/usr/bin/fims_server |$(BINDIR)/fims_server |g' -e 's|/usr/bin/cops |$(BINDIR)/cops |g' \
            -e 's|/etc/cops/|$(SYSCONFDIR)/cops/|g' \
            -e 's|file:///usr/share/doc/|file://$(DOCDIR)/|g'
DOCS_FIMS := fims-server/README.md docs/systemd.md docs/install.md
DOCS_COPS := docs/cops.md docs/systemd.md docs/install.md

.PHONY: all install uninstall packages

all:
	$(CARGO) build --release --locked -p fims-server --bin fims_server --bin fims_send --bin fims_listen
	$(CARGO) build --release --locked -p cops-server --bin cops
	$(MAKE) -C c-bindings lib

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
	    $(DESTDIR)$(SYSCONFDIR)/cops $(DESTDIR)$(SYSCONFDIR)/profile.d \
	    $(DESTDIR)$(DOCDIR)/fims-server/protocol $(DESTDIR)$(DOCDIR)/cops/protocol \
	    $(DESTDIR)$(DOCDIR)/cops/examples
	for p in $(PROGRAMS); do install -m 755 $(BUILT)/$$p $(DESTDIR)$(BINDIR)/ || exit 1; done
	for u in $(UNITS); do \
	  sed $(UNIT_SED) examples/systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u && \
	  chmod 644 $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done
	install -m 644 packaging/sysusers.d/fims.conf packaging/sysusers.d/cops.conf $(DESTDIR)$(SYSUSERSDIR)/
	install -m 644 packaging/etc/profile.d/fims-socket.sh $(DESTDIR)$(SYSCONFDIR)/profile.d/
	# A configuration you already have is kept.
	[ -e $(DESTDIR)$(SYSCONFDIR)/cops/cops.json ] || \
	  install -m 644 packaging/etc/cops/cops.json $(DESTDIR)$(SYSCONFDIR)/cops/
	install -m 644 $(DOCS_FIMS) $(DESTDIR)$(DOCDIR)/fims-server/
	install -m 644 docs/protocol/fims.md $(DESTDIR)$(DOCDIR)/fims-server/protocol/
	install -m 644 $(DOCS_COPS) $(DESTDIR)$(DOCDIR)/cops/
	install -m 644 docs/protocol/cops.md $(DESTDIR)$(DOCDIR)/cops/protocol/
	install -m 644 examples/configs/*.json $(DESTDIR)$(DOCDIR)/cops/examples/
	$(MAKE) -C c-bindings install PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) TARGET_DIR=$(TARGET_DIR)

uninstall:
	for p in $(PROGRAMS); do rm -f $(DESTDIR)$(BINDIR)/$$p; done
	for u in $(UNITS); do rm -f $(DESTDIR)$(UNITDIR)/$$u; done
	rm -f $(DESTDIR)$(SYSUSERSDIR)/fims.conf $(DESTDIR)$(SYSUSERSDIR)/cops.conf \
	      $(DESTDIR)$(SYSCONFDIR)/profile.d/fims-socket.sh
	# The configuration goes only if it is still the one installed.
	if cmp -s packaging/etc/cops/cops.json $(DESTDIR)$(SYSCONFDIR)/cops/cops.json; then \
	  rm -f $(DESTDIR)$(SYSCONFDIR)/cops/cops.json; fi
	for f in $(notdir $(DOCS_FIMS)) protocol/fims.md; do rm -f $(DESTDIR)$(DOCDIR)/fims-server/$$f; done
	for f in $(notdir $(DOCS_COPS)) protocol/cops.md $(addprefix examples/,$(notdir $(wildcard examples/configs/*.json))); do \
	  rm -f $(DESTDIR)$(DOCDIR)/cops/$$f; done
	-rmdir $(DESTDIR)$(DOCDIR)/fims-server/protocol $(DESTDIR)$(DOCDIR)/fims-server \
	       $(DESTDIR)$(DOCDIR)/cops/protocol $(DESTDIR)$(DOCDIR)/cops/examples $(DESTDIR)$(DOCDIR)/cops 2>/dev/null
	$(MAKE) -C c-bindings uninstall PREFIX=$(PREFIX) DESTDIR=$(DESTDIR)

packages:
	packaging/build
