import sys, time
sys.path.insert(0, ".")
from entrypoint import redact, log_text, log_json
redact.remember_secrets("cache_peer p parent 3128 0 login=alice:Remembered-Secret-1234")
for name, line in {
  "plain": "a" * (1 << 20),
  "words": "password=x " * ((1 << 20) // 11),
  "quotes": '"' + "login=" * ((1 << 20) // 6),
  "at": "http://a:" + "b@" * ((1 << 19)),
  "dash": "-w " * ((1 << 20) // 3),
  "auth": "authorization " * ((1 << 20) // 14),
  "daemon": "daemon:" + "a/" * (1 << 19),
}.items():
    t = time.monotonic(); out = log_text.safe_line(line); a = time.monotonic() - t
    t = time.monotonic(); log_json.render_cache_log(line); b = time.monotonic() - t
    print(f"{name}: text {a*1000:.0f} ms json {b*1000:.0f} ms")
