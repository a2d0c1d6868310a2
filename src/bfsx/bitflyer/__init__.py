"""bitFlyer Lightning wire format: the only package that knows it.

Signing, API paths, product specs, ids, timestamps, error codes, rate-limit headers, realtime channel
names and payload types. Shared by the client (bot side) and the simulator (exchange side).
"""
