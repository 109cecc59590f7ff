"""The peer of the workflow benchmark: Prefect 3 running a sequential flow of N tasks, each
computing fibo(10) (the published flow benchmark's task), in one process against Prefect's
ephemeral local server. Prints one JSON line: the import time, the first flow (which starts the
ephemeral server) and each following flow, in ms.

Usage: python flow.py N REPS
"""
import json
import sys
import time

t0 = time.perf_counter()
from prefect import flow, task  # noqa: E402

t_import = time.perf_counter()
N = int(sys.argv[1])
REPS = int(sys.argv[2])


def fibo(n):
    return n if n < 2 else fibo(n - 1) + fibo(n - 2)


@task
def step(i, prev):
    # Each task depends on the previous one's result, so they run one after another.
    return fibo(10) + 0 * prev


@flow
def chain():
    v = 0
    for i in range(N):
        v = step(i, v)
    return v


flows = []
for _ in range(REPS + 1):
    t = time.perf_counter()
    result = chain()
    flows.append((time.perf_counter() - t) * 1000)
    assert result == 55, result
print(json.dumps({"import_ms": (t_import - t0) * 1000, "first_flow_ms": flows[0], "flow_ms": flows[1:]}))
