"""Many runs at once on one machine: a pool of devices (one run per GPU, or disjoint CPU sets), each
taken through a lease that no other harness process can hold at the same time.

    lease.py     one file lock per device in the harness's state directory (released on exit or kill -9)
    slots.py     the pool's members: GPUs by UUID (a MIG slice is its own member), or CPU sets
    parallel.py  run jobs on the pool: each takes a free member, runs, gives it back; Ctrl-C stops all
"""
