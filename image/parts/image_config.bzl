"""The image's config and labels: the one source that //image (rules_oci's oci_image) and the
offline CI image (//image/offline, image/layers/oci_writer.py) both read, so they cannot
drift; image/checks/config_test.py checks each built image against the JSON of IMAGE_CONFIG
(//image/parts:image_config_json)."""

# The UID the image runs as; any UID with GID 0 works too (OpenShift).
SQUID_UID = 1000

# Keys are oci_image's attribute names (//image passes the dict whole); oci_writer.py refuses
# any key it does not know. No stop signal: both use the runtime's default SIGTERM, which
# the entrypoint handles (docs/operating.md "Startup and shutdown contract").
IMAGE_CONFIG = {
    # Exec form, straight into the interpreter: rules_python's launchers need
    # /usr/bin/env or bash, which this image does not have.
    "entrypoint": [
        "/usr/bin/python3",
        "/usr/local/bin/entrypoint.py",
    ],
    "env": {
        "PATH": "/usr/local/bin:/usr/sbin:/usr/bin",
        "PYTHONPATH": "/usr/lib/cephaloproxy",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
        "LANG": "C.UTF-8",
        "HOME": "/home/squid",
        "TZ": "UTC",
    },
    "exposed_ports": [
        "3128/tcp",
        "8080/tcp",
    ],
    "user": str(SQUID_UID),
    "workdir": "/home/squid",
}

# Unstamped values; --stamp (image/workspace_status.py) fills in version, revision and time.
LABELS = [
    "org.opencontainers.image.title=CephaloProxy",
    "org.opencontainers.image.description=Squid forward proxy with SSL-bump on a shell-free distroless Debian 13 base",
    "org.opencontainers.image.licenses=GPL-2.0-or-later",
    "org.opencontainers.image.version=0.0.0-unstamped",
    "org.opencontainers.image.revision=unstamped-revision",
    "org.opencontainers.image.created=1970-01-01T00:00:00Z",
    "org.opencontainers.image.base.name=debian:trixie (distroless)",
]

# The stdlib and app bytecode's tag: the image's Python minor version (3.13 in both images).
PYTHON_CACHE_TAG = "cpython-313"
