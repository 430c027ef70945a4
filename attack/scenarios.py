"""Attack scenarios against the real entrypoint + Squid 7.7 (bounded)."""
import json, os, sys, time, socket, signal
sys.path.insert(0, "tests/entrypoint"); sys.path.insert(0, ".")
import harness
from harness import Workspace, EntrypointRun, http_get

BASE = """http_port {port}{opts}
acl localnet src 127.0.0.0/8
http_access allow localhost manager
http_access deny manager
http_access allow localhost
http_access deny all
access_log stdio:/dev/stdout !manager
cache_log /dev/stderr
cache_store_log none
logfile_rotate 0
pid_filename {run}/squid.pid
shutdown_lifetime 1 seconds
visible_hostname cephaloproxy
pinger_enable off
{extra}
"""

def run(name, opts="", extra="", env=None, action=None, pre=""):
    ws = Workspace()
    try:
        text = pre + BASE.format(port=ws.squid_port, opts=opts, run=ws.runtime_dir("run"), extra=extra)
        ws.write_custom_config(text)
        r = EntrypointRun(ws, ws.env(**(env or {})))
        try:
            try:
                r.wait_for_output(r"Container ready", 60)
            except AssertionError as e:
                print(name, "NOT READY", str(e)[-2000:]); return
            if action: action(ws, r)
            time.sleep(1.5)
        finally:
            r.cleanup()
        out = r.stdout + r.stderr
        print(f"==== {name}")
        check(out, env)
        print(out[-4000:])
    finally:
        ws.remove()

def check(out, env):
    if env and env.get("LOG_FORMAT") == "json":
        for line in out.splitlines():
            try:
                obj = json.loads(line)
                assert isinstance(obj, dict)
            except Exception:
                print("!!! NOT JSON:", repr(line[:300]))
    for line in out.splitlines():
        if any(ord(c) < 32 and c != "\t" for c in line):
            print("!!! CONTROL:", repr(line[:300]))
    for secret in SECRETS:
        if secret.lower() in out.lower():
            print("!!! SECRET LEAK", secret)

SECRETS = []

def scrape(ws, r, n=3):
    for _ in range(n):
        code, body, _ = http_get(f"http://127.0.0.1:{ws.health_port}/metrics", timeout=10)
        up = [l for l in body.splitlines() if l.startswith(("squid_up", "cephaloproxy_squid_manager_denied"))]
        print("scrape", code, up)
        time.sleep(0.3)

if __name__ == "__main__":
    which = sys.argv[1:]
    if "passwd" in which:
        SECRETS.append("hunter2secret")
        run("cachemgr_passwd", extra="cachemgr_passwd hunter2secret all", env={"LOG_FORMAT": "json"}, action=scrape)
    if "intercept" in which:
        def act(ws, r): scrape(ws, r, 3)
        run("intercept-first", opts=" intercept", extra=f"http_port {harness.free_port()}", action=act)

def client_junk(ws, r):
    origin = harness.start_local_http_server("ok")
    try:
        s = socket.create_connection(("127.0.0.1", ws.squid_port), 5)
        req = (f"GET http://127.0.0.1:{origin.port}/a\x1b[31mb?password=urlsecret1 HTTP/1.1\r\n"
               f"Host: 127.0.0.1:{origin.port}\r\nProxy-Authorization: Basic dXNlcjpzZWNyZXRwdw==\r\n"
               "X-Junk: \xff\xfe\x01\x1b]0;title\x07\r\n\r\n").encode("latin-1")
        s.sendall(req); s.settimeout(5)
        try: print("client got", s.recv(200)[:60])
        except Exception as e: print("client", e)
        s.close()
    finally:
        origin.close()
    scrape(ws, r, 2)

if __name__ == "__main__" and "client" in sys.argv[1:]:
    SECRETS.extend(["hunter2secret", "dXNlcjpzZWNyZXRwdw", "urlsecret1"])
    run("client-json", extra="cachemgr_passwd hunter2secret all\ndebug_options ALL,1 11,2 33,2", env={"LOG_FORMAT": "json"}, action=client_junk)

def big_token(ws, r):
    origin = harness.start_local_http_server("ok")
    try:
        s = socket.create_connection(("127.0.0.1", ws.squid_port), 5)
        token = "A" * 70000 + "TOKENTAILSECRET" + "B" * 100
        req = (f"GET http://127.0.0.1:{origin.port}/a HTTP/1.1\r\nHost: 127.0.0.1:{origin.port}\r\n"
               f"Proxy-Authorization: Negotiate {token}\r\n\r\n").encode()
        s.sendall(req); s.settimeout(5)
        try: print("client got", s.recv(200)[:60])
        except Exception as e: print("client", e)
        s.close()
    finally:
        origin.close()

if __name__ == "__main__" and "bigtoken" in sys.argv[1:]:
    for fmt in ("text", "json"):
        SECRETS[:] = ["TOKENTAILSECRET"]
        run(f"bigtoken-{fmt}", extra="request_header_max_size 256 KB\ndebug_options ALL,1 11,2", env={"LOG_FORMAT": fmt}, action=big_token)
