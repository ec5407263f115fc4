"""Helpers of scripts/bench.py: processes and mounts, the peers rcfs is compared with, sections.

Nothing here is imported by rcfs; the benchmark drives rcfs only through its
command line, the kernel (FUSE) and the emulator's admin API, like a user.
"""
