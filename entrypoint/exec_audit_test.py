"""Proves the entrypoint executes only Squid, security_file_certgen and the Python interpreter.

The real entrypoint runs under `python -c` that installs a `sys.addaudithook` recording every
process-creating audit event (subprocess.Popen, os.exec*, os.posix_spawn*, os.spawn*, os.system)
to a file, with an SSL-bump config (so certgen runs) and a SIGHUP (so reconfigure runs).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from entrypoint.testing import (  # noqa: F401 - fixtures
    Launcher,
    Workspace,
    launch,
    make_ca,
    openssl,
    python_for_child,
    squid_available,
    ssl_bump_config,
    workspace,
)

AUDIT_WRAPPER = """
import json, os, runpy, sys
record = open(sys.argv[1], "a", buffering=1)
WATCHED = ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "os.startfile")
def hook(event, args):
    if event.startswith(WATCHED):
        record.write(json.dumps([event, [str(a) if not isinstance(a, (list, tuple)) else [str(x) for x in a] for a in args[:2]]]) + "\\n")
sys.addaudithook(hook)
script = sys.argv[2]
sys.argv = [script]
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.skipif(openssl() is None, reason="the openssl CLI is needed to make the test CA")
def test_only_squid_certgen_and_python_are_executed(
    workspace: Workspace, launch: Launcher, tmp_path: Path
) -> None:
    cert, key = make_ca(tmp_path, "Audit CA")
    workspace.make_dir(workspace.tls_dir, 0o775)
    for source, name in ((cert, "tls.crt"), (key, "tls.key")):
        shutil.copy(source, workspace.tls_dir / name)
        os.chmod(workspace.tls_dir / name, 0o664)
    workspace.write_custom_config(
        ssl_bump_config(workspace) + f"cache_dir ufs {workspace.runtime_dir('spool')} 16 4 4\n"
    )
    record = workspace.var / "exec-audit.jsonl"
    record.touch()
    os.chmod(record, 0o666)
    python = python_for_child()
    run = launch(
        argv=[python, "-c", AUDIT_WRAPPER, str(record), str(workspace.bin / "entrypoint.py")]
    )
    squid_pid = run.wait_ready()
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(rf"Squid reconfigured \(PID {squid_pid} kept\)")
    run.process.send_signal(signal.SIGTERM)
    assert run.wait_exit(60) == 0

    events = [json.loads(line) for line in record.read_text().splitlines()]
    executed = []
    for event, args in events:
        assert event in ("subprocess.Popen", "os.posix_spawn", "os.exec"), (
            f"unexpected {event}: {args}"
        )
        executable, argv = args[0], args[1]
        program = argv[0] if executable in ("None", "") else executable
        executed.append((program, argv))
    allowed = {
        os.path.realpath(p)
        for p in (
            workspace.env()["CEPHALOPROXY_SQUID_BIN"],
            workspace.env()["CEPHALOPROXY_CERTGEN_BIN"],
            python,
        )
    }
    for program, argv in executed:
        assert os.path.realpath(program) in allowed, f"executed {program} {argv}"
    kinds = {os.path.basename(program) for program, _ in executed}  # trixie: squid -> squid-openssl
    assert "squid" in kinds and "security_file_certgen" in kinds
    assert os.path.realpath(python) in {os.path.realpath(p) for p, _ in executed}
    squid_modes = [argv[1:3] for program, argv in executed if program.endswith("squid")]
    assert (
        ["-k", "parse"] in squid_modes
        and ["-N", "-z"] in squid_modes
        and ["--foreground", "-d"] in squid_modes
    )
