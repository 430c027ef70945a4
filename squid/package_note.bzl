"""The .note.package JSON //squid links into every program (https://systemd.io/ELF_PACKAGE_METADATA/).

Why: a distroless image has no package database entry for a Squid compiled from source, so
Trivy and Grype cannot see it; Syft reads this note from the binary (name, version, and the
cpe/purl it matches advisories by). Everything comes from version.bzl, so a release bump
changes the note, the SBOMs and the build together.
"""

load(":version.bzl", "SQUID_CPE", "SQUID_PURL", "SQUID_VERSION")

def squid_package_note(architecture):
    """The note's JSON for one architecture.

    Args:
      architecture: Debian's name (amd64, arm64), as in the image's dpkg records and the Debian purls.

    Returns:
      The package-notes JSON object as a string.
    """
    return json.encode({
        "type": "generic",
        "name": "squid",
        "version": SQUID_VERSION,
        "architecture": architecture,
        "cpe": SQUID_CPE,
        "purl": SQUID_PURL,
    })

# For the target platform (autotools_build's package_note: the linker writes it into squid,
# every helper and security_file_certgen).
SQUID_PACKAGE_NOTE = select({
    "@platforms//cpu:x86_64": squid_package_note("amd64"),
    "@platforms//cpu:arm64": squid_package_note("arm64"),
})
