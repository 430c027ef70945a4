import asyncio, os, sys
sys.path.insert(0, ".")
from entrypoint import log_relay, redact, log_json
from entrypoint.log_relay import LineRelay

class Sink:
    def __init__(self): self.lines=[]
    def write_lines(self, lines): self.lines += lines
    def write_line(self, line): self.lines.append(line)

async def relay(data: bytes, render):
    sink = Sink()
    r, w = os.pipe()
    loop = asyncio.get_running_loop()
    _, proto = await loop.connect_read_pipe(lambda: LineRelay(sink, render=render), os.fdopen(r, "rb", 0))
    view = memoryview(data)
    first = len(data) - 200  # everything but the tail first: the relay sees > 64 KiB without a newline
    for piece in (view[:first], view[first:]):
        while piece:
            n = os.write(w, piece[:65536]); piece = piece[n:]
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.1)
    os.close(w)
    await asyncio.wait_for(proto.closed, 5)
    return b"".join(sink.lines).decode()

redact.remember_secrets("cache_peer p parent 3128 0 login=alice:Remembered-Secret-1234")
cases = {
  "rule": b"Proxy-Authorization: Negotiate " + b"A" * (65536 - 31) + b"TOKENTAIL-leaked-part" + b"B" * 4000 + b"\n",
  "remembered": b"x" * (65536 - 8) + b"Remembered-Secret-1234 end" + b"z" * 4000 + b"\n",
  "rule-pw": b"y" * (65536 - 12) + b"password=hunter2topsecret" + b" q" * 2000 + b"\n",
}
for name, data in cases.items():
    for fmt, render in (("text", log_relay.safe_line), ("json", log_json.render_cache_log)):
        out = asyncio.run(relay(data, render))
        leaks = [s for s in ("TOKENTAIL", "cret-1234", "Secret-1234", "topsecret") if s in out]
        print(name, fmt, "LEAK" if leaks else "ok", leaks, [l[-60:] for l in out.splitlines()])
