"""Files shipped into the kernel workers' sandboxes (copied into ``/sandbox/work``, imported there by plain name).

Nothing here is trusted by the driver: a candidate shares an interpreter with this code and may replace any of it.
The host imports only :mod:`.kernel_args` (signature parsing) for tests; the rest runs inside workers.
"""
