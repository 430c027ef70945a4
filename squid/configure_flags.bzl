"""Every ./configure flag //squid passes, each with the reason it is there.

--prefix is not in this list: autotools_build (//squid:autotools.bzl) passes
--prefix=/usr and installs with DESTDIR, so no sandbox path is compiled in.
A cross toolchain adds --host=<triplet> (see autotools.bzl).
"""

SQUID_CONFIGURE_FLAGS = [
    # --- Debian-like layout (the image's paths) ---
    "--sysconfdir=/etc/squid",  # squid.conf, squid.conf.default live in /etc/squid.
    "--localstatedir=/var",  # state under /var, not /usr/var.
    "--libexecdir=/usr/lib/squid",  # helpers in /usr/lib/squid; sets the default sslcrtd_program path.
    "--datadir=/usr/share/squid",  # errors/ and icons/ in /usr/share/squid (mime.conf: make DEFAULT_MIME_TABLE).
    "--mandir=/usr/share/man",  # man pages where Debian has them (not shipped in the layer).
    "--with-logdir=/var/log/squid",  # compiled-in log dir = the image's writable /var/log/squid.
    "--with-pidfile=/var/run/squid/squid.pid",  # PID file inside the image's writable run dir (non-root).
    "--with-swapdir=/var/spool/squid",  # default cache_dir and ssl_db parent = the image's /var/spool/squid.
    "--with-default-user=squid",  # the image's unprivileged user (UID 1000) when started as root.

    # --- TLS: SSL-bump with Debian's OpenSSL (see BUILD.bazel for why) ---
    "--with-openssl",  # TLS, https_port and SSL-bump.
    "--enable-ssl-crtd",  # mint bump certificates in security_file_certgen helpers.
    "--enable-security-cert-generators=file",  # builds security_file_certgen.
    "--disable-security-cert-validators",  # the only validator is a Perl script; the image has no Perl.
    "--without-gnutls",  # exactly one TLS library (OpenSSL) in the binary and the image.

    # --- Nothing a container forward proxy does not use ---
    "--without-systemd",  # no systemd in a container; no libsystemd.
    "--without-netfilter-conntrack",  # no conntrack/TPROXY marking; no libnetfilter_conntrack.
    "--without-cap",  # runs unprivileged, no TPROXY: no libcap.
    "--disable-ecap",  # eCAP needs loadable adapters (libecap); ICAP stays available.
    "--disable-shared",  # no loadable modules: no libltdl, everything linked in.
    "--without-mit-krb5",  # no Kerberos (libkrb5/libgssapi).
    "--without-heimdal-krb5",  # no Kerberos (Heimdal).
    "--without-gss",  # no GNU GSS.
    "--without-ldap",  # no LDAP (libldap).
    "--without-sasl",  # no Cyrus SASL.
    "--without-tdb",  # no TrivialDB (only session helpers use it).
    "--without-nettle",  # Squid's bundled MD5/Base64 instead of libnettle: one library less.
    "--without-cppunit",  # unit tests are not built for a release binary.
    "--enable-auth-basic=NCSA",  # Basic auth with basic_ncsa_auth only (htpasswd files, no PAM/LDAP).
    "--enable-auth-digest=file",  # Digest auth with digest_file_auth only (no LDAP/eDirectory).
    "--disable-auth-negotiate",  # its helpers need Kerberos.
    "--disable-auth-ntlm",  # its helpers need Samba/SMB.
    "--disable-external-acl-helpers",  # they pull in LDAP, Kerberos, Berkeley DB, TDB or Perl.
    "--disable-url-rewrite-helpers",  # the bundled ones are Perl/demo helpers.
    "--disable-storeid-rewrite-helpers",  # the bundled one is a Perl script.
    "--enable-log-daemon-helpers=file",  # log_file_daemon for `access_log daemon:`; the DB one is Perl.
    "--disable-wccp",  # WCCP is router interception, not a forward proxy's job.
    "--disable-wccpv2",  # same, version 2.

    # --- Features with no extra libraries that proxies commonly configure ---
    # (No --enable-storeio: Squid 7.7's configure ignores the list and builds
    # every store module, ufs/aufs/rock/diskd, so listing one would mislead.)
    "--enable-removal-policies=lru,heap",  # LRU plus the heap GDSF/LFUDA policies.
    "--enable-delay-pools",  # per-client bandwidth limits.
    # ICMP support as Debian builds it, so the packaged default config
    # (pinger_enable off, netdb_filename none) means the same on Debian's Squid
    # and this one; without it Squid 7 rejects those lines. The pinger helper
    # is installed without setuid and stays off unless configured.
    "--enable-icmp",

    # --- Portable, reproducible builds ---
    "--disable-arch-native",  # no -march=native: the binary runs on any x86-64/arm64 CPU.
    "--with-filedescriptors=65536",  # else configure bakes in the build sandbox's `ulimit -n`.
    # (No --with-large-files: off_t is 64-bit on both of the image's 64-bit targets already, and
    # the flag makes configure prepend the *build host's* `getconf` build-model flags (-m64 on
    # x86-64), which the arm64 cross compiler rejects.)
    "--disable-strict-error-checking",  # a newer host compiler's new warnings must not fail the build (-Werror).
    "--disable-dependency-tracking",  # one-shot build: skip .deps bookkeeping.
    "--disable-maintainer-mode",  # never rerun autotools on the release tarball's timestamps.
]

# Variables for both `make` runs (build and install).
SQUID_MAKE_ARGS = [
    # Debian's place for mime.conf; Squid's default would be /etc/squid/mime.conf.
    # A make variable, not a configure flag: Squid derives it from --sysconfdir.
    "DEFAULT_MIME_TABLE=/usr/share/squid/mime.conf",
]

# Compiler flags on top of the C/C++ toolchain's (both C and C++).
SQUID_COPTS = [
    # Optimised, no debug info, Squid's own assertions kept (as Debian builds it).
    "-O2",
    "-g0",
    "-UNDEBUG",
    # Debian's hardening flags.
    "-U_FORTIFY_SOURCE",
    "-D_FORTIFY_SOURCE=2",
    "-fstack-protector-strong",
    # reproducible_dates.h redefines __DATE__/__TIME__/__TIMESTAMP__ (force-included).
    "-Wno-builtin-macro-redefined",
]

SQUID_CXXOPTS = [
    "-std=c++17",  # Squid 7 is C++17; the toolchain's own -std= is dropped.
]

SQUID_LINKOPTS = [
    # The C++ runtime comes from the build host's GCC; linked in, the binary does not
    # depend on the image's libstdc++ version (see BUILD.bazel, "glibc/libstdc++ baseline").
    "-static-libstdc++",
    "-static-libgcc",
    # Debian's hardening: full RELRO.
    "-Wl,-z,relro",
    "-Wl,-z,now",
    # Last, after the toolchain's -no-as-needed: Squid's configure adds libraries (libcrypt,
    # ...) to every program; each binary should name only what it uses (Debian links so).
    "-Wl,--as-needed",
]
