"""Writes /etc/ssl/certs/ca-certificates.crt from the ca-certificates .deb, at build time.

ca-certificates ships only the certificates; its maintainer script (update-ca-certificates,
#!/bin/sh) builds the bundle, and it never runs in an image without a shell. Like that script
with Debian's default /etc/ca-certificates.conf (every certificate enabled), this concatenates
every usr/share/ca-certificates/**/*.crt in sorted order, each ending in a newline. Our own
because rules_distroless's cacerts (what //image used) is not reachable offline.

    ca_bundle.py CA_CERTIFICATES.deb OUTPUT.crt
"""

from __future__ import annotations

import sys
from pathlib import Path

from image.layers import deb_layer, path_rules

CERT_DIR = "usr/share/ca-certificates/"


def bundle(deb: Path) -> bytes:
    members = deb_layer.read_ar(deb)
    certificates: dict[str, bytes] = {}
    with deb_layer.open_member_tar(deb, members, "data.tar") as archive:
        for member in archive:
            name = path_rules.relative(member.name)
            if member.isfile() and name.startswith(CERT_DIR) and name.endswith(".crt"):
                extracted = archive.extractfile(member)
                certificates[name] = extracted.read() if extracted else b""
    if not certificates:
        raise deb_layer.DebError(
            f"{deb}: no {CERT_DIR}**/*.crt; is it the ca-certificates package?"
        )
    return b"".join(
        data if data.endswith(b"\n") else data + b"\n" for _, data in sorted(certificates.items())
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: ca_bundle.py CA_CERTIFICATES.deb OUTPUT.crt", file=sys.stderr)
        return 2
    try:
        data = bundle(Path(argv[0]))
        output = Path(argv[1])
        temporary = output.with_name(output.name + ".partial")
        temporary.write_bytes(data)
        temporary.replace(output)
    except (deb_layer.DebError, OSError) as error:
        print(f"ca_bundle: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
