"""CephaloProxy runtime: the container's PID 1 that validates, starts, watches and stops Squid."""
