"""config_oci_image: rules_oci's oci_image with the config of image/parts/image_config.bzl.

IMAGE_CONFIG is passed whole (its keys are oci_image's attribute names): a setting added there
reaches //image here and the offline CI image through image/layers/oci_writer.py, which refuses
keys it does not know, so the two images cannot drift apart. A macro because BUILD files may
not pass **kwargs.
"""

load("@rules_oci//oci:defs.bzl", "oci_image")
load("//image/parts:image_config.bzl", "IMAGE_CONFIG")

def config_oci_image(name, **kwargs):
    overridden = [key for key in kwargs if key in IMAGE_CONFIG]
    if overridden:
        fail("%s: %s come from image/parts/image_config.bzl; set them there" % (name, overridden))
    oci_image(name = name, **(IMAGE_CONFIG | kwargs))
