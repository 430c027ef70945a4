#!/usr/bin/env bash
# CI's container stage (.ci/run calls it after the Bazel passes): the acceptance suite
# (tests/acceptance) against the offline CI image (//image/offline), for real:
#   1. build //image/offline:tarball and :tarball_arm64 and copy them out of bazel-bin;
#   2. amd64 under podman (runc), in a private network namespace so its bridge and
#      iptables rules never reach the host's;
#   3. amd64 under a private Docker engine (tests/support/docker_daemon.py, its own
#      namespace too), without the podman_only cases (`kube play`);
#   4. arm64 under qemu-user-static with podman: the cases marked `arm64` (docs/building.md:
#      "Platforms"), waits scaled by CEPHALOPROXY_TEST_TIMEOUT_SCALE.
# Every run sets CEPHALOPROXY_REQUIRE_IMAGE=1, so a case that would skip for want of an
# image or engine fails; container_counts.py then prints the counts per engine and fails
# on any failed or skipped case. Each run's wall time is printed.
#
# Environment:
#   CEPHALOPROXY_CI_IMAGE_AMD64 / _ARM64  use these docker-archives, do not build
#   CEPHALOPROXY_CI_PYTHON                a python with the suite's pytest
#                                         (default: .ci/run's venv)
#   CEPHALOPROXY_CI_ARM64_SCALE           the arm64 run's wait scale (default 5)
#   CEPHALOPROXY_CI_ENGINES               which runs, default "podman docker arm64"
#   CEPHALOPROXY_CI_OUT                   results dir (default /tmp/cephaloproxy-ci-container)
# Exit status: 0 when every run passed; the last line names the runs that failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
python=${CEPHALOPROXY_CI_PYTHON:-/tmp/cephaloproxy-ci-venv/bin/python}
engines=${CEPHALOPROXY_CI_ENGINES:-podman docker arm64}
out=${CEPHALOPROXY_CI_OUT:-/tmp/cephaloproxy-ci-container}
rm -rf "$out" && mkdir -p "$out"
failed=()

image_amd64=${CEPHALOPROXY_CI_IMAGE_AMD64:-}
image_arm64=${CEPHALOPROXY_CI_IMAGE_ARM64:-}
if [ -z "$image_amd64" ] || [ -z "$image_arm64" ]; then
  echo "--- building //image/offline:tarball //image/offline:tarball_arm64"
  # Bazel names each target's outputs under "Target ... up-to-date:"; take the .tar.
  tools/debian-bazel/run build //image/offline:tarball //image/offline:tarball_arm64 \
    --curses=no --show_result=2 2>&1 | tee "$out/build.log"
  build_rc=${PIPESTATUS[0]}
  output_of() {
    awk -v target="Target $1 up-to-date:" '$0 ~ /^Target / { on = index($0, target) > 0; next }
      on && $1 ~ /\.tar$/ { print $1; exit }' "$out/build.log"
  }
  built_amd64=$(output_of //image/offline:tarball)
  built_arm64=$(output_of //image/offline:tarball_arm64)
  if [ "$build_rc" != 0 ] || [ ! -f "$built_amd64" ] || [ ! -f "$built_arm64" ]; then
    echo "container stage: the offline image did not build (exit $build_rc; outputs '$built_amd64' '$built_arm64')" >&2
    echo "container stage FAILED: build"
    exit 1
  fi
  # Out of bazel-bin: the next Bazel command may replace them while the suite runs.
  image_amd64=$out/cephaloproxy-offline-amd64.tar
  image_arm64=$out/cephaloproxy-offline-arm64.tar
  cp "$built_amd64" "$image_amd64" && cp "$built_arm64" "$image_arm64"
fi
ls -la "$image_amd64" "$image_arm64"

# pytest with the settings every run shares; $1 names the run (its JUnit file), the rest
# are pytest arguments.
suite() {
  local label=$1; shift
  env CEPHALOPROXY_REQUIRE_IMAGE=1 "$python" -m pytest -p no:cacheprovider -q -rfEs \
    --junitxml="$out/$label.xml" tests/acceptance "$@"
}

# podman in a network namespace of its own, loopback up (not `ip netns exec`: see
# docker_daemon.py on remounting /sys). Its containers die with the suite's cleanup.
in_private_netns() {
  unshare --net -- bash -c 'ip link set lo up && exec "$@"' private-netns "$@"
}

timed() {
  local label=$1; shift
  local started=$SECONDS
  echo "--- container suite: $label"
  "$@"
  local rc=$?
  echo "container suite $label: exit $rc, wall time $((SECONDS - started)) s"
  [ "$rc" = 0 ] || failed+=("$label")
}

export -f suite in_private_netns
export python out
counts=()
for engine in $engines; do
  case $engine in
    podman)
      timed podman in_private_netns env CEPHALOPROXY_CONTAINER_RUNTIME=podman \
        CEPHALOPROXY_IMAGE_TARBALL="$image_amd64" bash -c 'suite podman'
      counts+=("podman-amd64=$out/podman.xml") ;;
    docker)
      timed docker "$python" -m tests.support.docker_daemon run -- env CEPHALOPROXY_CONTAINER_RUNTIME=docker \
        CEPHALOPROXY_IMAGE_TARBALL="$image_amd64" bash -c "suite docker -m 'not podman_only'"
      counts+=("docker-amd64=$out/docker.xml") ;;
    arm64)
      timed arm64 in_private_netns env CEPHALOPROXY_CONTAINER_RUNTIME=podman \
        CEPHALOPROXY_IMAGE_TARBALL="$image_arm64" \
        CEPHALOPROXY_TEST_TIMEOUT_SCALE="${CEPHALOPROXY_CI_ARM64_SCALE:-5}" bash -c 'suite arm64 -m arm64'
      counts+=("podman-arm64=$out/arm64.xml") ;;
    *) echo "container stage: unknown engine '$engine' in CEPHALOPROXY_CI_ENGINES" >&2; exit 2 ;;
  esac
done

echo "--- container suite counts"
"$python" -m tools.ci.container_counts "${counts[@]}" || [ ${#failed[@]} -gt 0 ] || failed+=("counts")
if [ ${#failed[@]} -gt 0 ]; then
  echo "container stage FAILED: ${failed[*]}"
  exit 1
fi
echo "container stage passed: ${engines}"
