"""Which Squid the tests run: the one seam between online and offline builds.

Tests read CEPHALOPROXY_SQUID_ROOT, a directory laid out like the image root
(usr/sbin/squid, usr/lib/squid/security_file_certgen, usr/share/squid/...).
By default that is //squid:rootfs, the Squid this repository compiles; with
--//tools/squid:use_system_squid (set by --config=debian) it is "/", the
system's Squid (Debian's squid-openssl in the offline environment).
"""

SQUID_TEST_DATA = select({
    "//tools/squid:system_squid": [],
    "//conditions:default": ["//squid:rootfs"],
})

SQUID_TEST_ENV = select({
    "//tools/squid:system_squid": {"CEPHALOPROXY_SQUID_ROOT": "/"},
    "//conditions:default": {"CEPHALOPROXY_SQUID_ROOT": "$(rootpath //squid:rootfs)"},
})
