"""Fixtures for the container acceptance suite.

Without an image (CEPHALOPROXY_IMAGE / CEPHALOPROXY_IMAGE_TARBALL unset) or without a
usable docker/podman engine, every test is reported SKIPPED with the reason; a named
image that cannot be found is an error (the user asked for it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import certs, harness, image_source, netutil, timeouts
from tests.support.runtime import ContainerRuntime, detect_runtime

_FACTORIES = pytest.StashKey[list[harness.ContainerFactory]]()


def pytest_report_header(config: pytest.Config) -> str:
    try:
        choice = image_source.choose_image()
    except image_source.ImageSourceError as error:
        return f"cephaloproxy acceptance: ERROR {error}"
    if choice is None:
        return f"cephaloproxy acceptance: will SKIP, {image_source.NO_IMAGE_REASON}"
    try:
        scale = f"waits x{timeouts.scale():g} (${timeouts.SCALE_ENV})"
    except timeouts.TimeoutScaleError as error:
        scale = f"ERROR {error}"
    return f"cephaloproxy acceptance: testing {choice.describe()}, {scale}"


@pytest.fixture(scope="session")
def image_choice() -> image_source.ImageChoice:
    try:
        choice = image_source.choose_image()
    except image_source.ImageSourceError as error:
        pytest.fail(str(error), pytrace=False)
    if choice is None:
        pytest.skip(image_source.NO_IMAGE_REASON)
    return choice


@pytest.fixture(scope="session")
def container_runtime(
    image_choice: image_source.ImageChoice, tmp_path_factory: pytest.TempPathFactory
) -> ContainerRuntime:
    try:
        timeouts.scale()
    except timeouts.TimeoutScaleError as error:
        pytest.fail(str(error), pytrace=False)
    detection = detect_runtime(conf_dir=tmp_path_factory.mktemp("podman-conf"))
    if detection.spec is None:
        pytest.skip(f"no usable container runtime (docker or podman): {detection.reason()}")
    return ContainerRuntime(detection.spec)


@pytest.fixture(scope="session")
def image_ref(container_runtime: ContainerRuntime, image_choice: image_source.ImageChoice) -> str:
    """The image under test, loaded once per session when given as a tarball."""
    if image_choice.reference is not None:
        if not container_runtime.image_exists(image_choice.reference):
            pytest.fail(
                f"{image_source.IMAGE_ENV}={image_choice.reference!r} is not present in "
                f"{container_runtime.name}; load or pull it first",
                pytrace=False,
            )
        return image_choice.reference
    assert image_choice.tarball is not None
    refs = container_runtime.load(image_choice.tarball)
    return refs[0]


@pytest.fixture(scope="session")
def host_address(container_runtime: ContainerRuntime) -> str:
    address = harness.host_address(container_runtime)
    if address is None:
        pytest.fail(
            f"cannot find the address containers use to reach this host; set {harness.HOST_ADDRESS_ENV}",
            pytrace=False,
        )
    return address


@pytest.fixture
def containers(
    request: pytest.FixtureRequest, container_runtime: ContainerRuntime, image_ref: str
) -> Iterator[harness.ContainerFactory]:
    """Unique container names per test; every container is force-removed afterwards."""
    factory = harness.ContainerFactory(container_runtime, image_ref, label=request.node.name)
    request.node.stash.setdefault(_FACTORIES, []).append(factory)
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On failure, attach each container's logs to the report (containers still exist here)."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for factory in item.stash.get(_FACTORIES, []):
        for name in factory.names:
            try:
                logs = factory.runtime.logs(name)
                text = f"--- stdout ---\n{logs.stdout}\n--- stderr ---\n{logs.stderr}"
            except Exception as error:  # noqa: BLE001 - the report must not hide the real failure
                text = f"(could not read logs: {error!r})"
            report.sections.append((f"container logs: {name}", text))


@pytest.fixture(scope="session")
def default_squid_conf(container_runtime: ContainerRuntime, image_ref: str) -> str:
    """The packaged default config, read from the image, as the base for test configs."""
    factory = harness.ContainerFactory(container_runtime, image_ref, label="default-conf")
    try:
        return factory.run_python(
            f"import sys; sys.stdout.write(open({harness.DEFAULT_CONFIG_PATH!r}).read())"
        )
    finally:
        factory.cleanup()


@pytest.fixture
def host_server(host_address: str) -> Iterator[netutil.LocalServer]:
    """An HTTP server on the host, reachable from containers at host_address."""
    with netutil.LocalServer(host_address, freebind=True) as server:
        yield server


@pytest.fixture
def test_ca(tmp_path: Path) -> certs.KeyPair:
    return certs.generate_ca(tmp_path / "ca")
