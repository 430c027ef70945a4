"""oci_label_file: the image's `key=value` label lines, with the build-time settable ones.

org.opencontainers.image.source, .vendor and .url name the publisher, which is whoever builds
and pushes the image, so they come from build settings (//image/labels:source, :vendor, :url;
e.g. `--//image/labels:source=https://git.example/team/cephaloproxy`) and are left out when
empty: no image claims an address that is not its publisher's.
"""

load("@bazel_skylib//rules:common_settings.bzl", "BuildSettingInfo")

_SETTABLE = {
    "source": "org.opencontainers.image.source",
    "url": "org.opencontainers.image.url",
    "vendor": "org.opencontainers.image.vendor",
}

def _oci_label_file_impl(ctx):
    lines = list(ctx.attr.labels)
    for attr_name in sorted(_SETTABLE):
        value = getattr(ctx.attr, attr_name)[BuildSettingInfo].value.strip()
        if "\n" in value:
            fail("%s: %s must be one line" % (ctx.label, getattr(ctx.attr, attr_name).label))
        if value:
            lines.append("%s=%s" % (_SETTABLE[attr_name], value))
    out = ctx.actions.declare_file(ctx.label.name + ".txt")
    ctx.actions.write(out, "\n".join(lines) + "\n")
    return [DefaultInfo(files = depset([out]))]

oci_label_file = rule(
    implementation = _oci_label_file_impl,
    doc = "Writes fixed label lines plus the non-empty source/url/vendor build settings.",
    attrs = {
        "labels": attr.string_list(doc = "Fixed `key=value` lines, in order."),
        "source": attr.label(default = "//image/labels:source", providers = [BuildSettingInfo]),
        "url": attr.label(default = "//image/labels:url", providers = [BuildSettingInfo]),
        "vendor": attr.label(default = "//image/labels:vendor", providers = [BuildSettingInfo]),
    },
)
