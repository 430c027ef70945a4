"""oci_layout_image: an OCI layout and a docker-archive tar from layers and image_config.bzl,
written by image/layers/oci_writer.py (the offline CI image's assembler; //image uses rules_oci)."""

load("//image/parts:image_config.bzl", "IMAGE_CONFIG")

def _oci_layout_image_impl(ctx):
    layout = ctx.actions.declare_directory(ctx.label.name)
    tarball = ctx.actions.declare_file(ctx.label.name + ".tar")
    config = ctx.actions.declare_file(ctx.label.name + ".config.json")
    spec = ctx.actions.declare_file(ctx.label.name + ".spec.json")
    ctx.actions.write(spec, json.encode({
        "architecture": ctx.attr.architecture,
        "os": "linux",
        "repo_tag": ctx.attr.repo_tag,
        "config": IMAGE_CONFIG,
        "labels": ctx.file.labels.path,
        "created": ctx.file.created.path,
        "layers": [f.path for f in ctx.files.layers],
    }))
    ctx.actions.run(
        executable = ctx.executable._writer,
        arguments = [spec.path, "--layout", layout.path, "--tarball", tarball.path, "--config-out", config.path],
        inputs = [spec, ctx.file.labels, ctx.file.created] + ctx.files.layers,
        outputs = [layout, tarball, config],
        mnemonic = "OciLayout",
        progress_message = "Assembling the image %{label}",
    )
    return [
        DefaultInfo(files = depset([layout])),
        OutputGroupInfo(tarball = depset([tarball]), config = depset([config])),
    ]

oci_layout_image = rule(
    implementation = _oci_layout_image_impl,
    doc = "An OCI layout (default output), a docker-archive tar (output group `tarball`) and the config blob (`config`).",
    attrs = {
        "layers": attr.label_list(allow_files = [".tar.gz"], mandatory = True, doc = "gzipped layers, bottom first"),
        "architecture": attr.string(mandatory = True),
        "labels": attr.label(allow_single_file = True, mandatory = True, doc = "key=value lines"),
        "created": attr.label(allow_single_file = True, mandatory = True, doc = "one RFC 3339 time"),
        "repo_tag": attr.string(doc = "the tag `docker load` / `podman load` give the image"),
        "_writer": attr.label(default = "//image/layers:oci_writer", executable = True, cfg = "exec"),
    },
)
