import sys; sys.path.insert(0, ".")
from entrypoint import output_test as t
from entrypoint import log_relay
with t._remembered_secret():
    line = ("x" * (log_relay.MAX_LINE_BYTES - 8) + t._SECRET + " tail " + "z" * 3000 + "\nnext line\n").encode()
    out = t._relayed(line, log_relay.safe_line).decode()
    print([l[-40:] for l in out.splitlines()])
