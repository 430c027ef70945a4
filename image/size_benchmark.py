"""Prints the image's size next to the size of its Debian package set alone.

    bazel run //image:size_benchmark

Compressed = bytes a registry stores and a pull downloads (the layer blobs);
uncompressed = bytes of the layer tars (roughly what lands on disk). The
package-set line is the //image:debian_packages layer: the trixie .debs' files
plus their status.d records, i.e. the distroless base before Python, Squid and
the entrypoint are added. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import sys

from image.layers.oci_layout import LayoutError, find_runfile, gzip_uncompressed_size, load_image


def megabytes(size: int) -> str:
    return f"{size / 1_000_000:8.2f} MB"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: size_benchmark IMAGE_LAYOUT PACKAGES_LAYER", file=sys.stderr)
        return 2
    try:
        layout = find_runfile(argv[0])
        packages_layer = find_runfile(argv[1])
        image = load_image(layout)
    except LayoutError as error:
        print(f"size_benchmark: {error}", file=sys.stderr)
        return 1
    history = image.config.get("history", [])
    rows = []
    for index, blob in enumerate(image.layer_blobs):
        created_by = (
            history[index].get("created_by", "")
            if isinstance(history, list) and index < len(history)
            else ""
        )
        rows.append(
            (
                created_by.replace("bazel build ", ""),
                blob.stat().st_size,
                gzip_uncompressed_size(blob),
            )
        )
    total_compressed = sum(r[1] for r in rows)
    total_uncompressed = sum(r[2] for r in rows)
    base_compressed = packages_layer.stat().st_size
    base_uncompressed = gzip_uncompressed_size(packages_layer)

    print(f"{'layer':<34} {'compressed':>12} {'uncompressed':>13}")
    for name, compressed, uncompressed in rows:
        print(f"{name:<34} {megabytes(compressed):>12} {megabytes(uncompressed):>13}")
    print(
        f"{'image total (' + str(len(rows)) + ' layers)':<34} {megabytes(total_compressed):>12} {megabytes(total_uncompressed):>13}"
    )
    print(
        f"{'Debian package set alone':<34} {megabytes(base_compressed):>12} {megabytes(base_uncompressed):>13}"
    )
    print(
        f"image / package set: {total_compressed / base_compressed:.2f}x compressed, "
        f"{total_uncompressed / base_uncompressed:.2f}x uncompressed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
