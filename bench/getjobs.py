"""The real Python bullmq (PyPI) reading every job through Queue.getJobs, per state, in pages
of 1000, into a DataFrame of the job fields. Prints how many jobs it read.

    python bench/getjobs.py redis://127.0.0.1:6379/0 bull bench
"""
import asyncio
import sys

import pandas as pd
from bullmq import Queue

STATES = ["active", "wait", "paused", "prioritized", "delayed", "waiting-children", "failed", "completed"]


async def main(url: str, prefix: str, name: str) -> pd.DataFrame:
    q = Queue(name, {"connection": url, "prefix": prefix})
    rows = []
    for state in STATES:
        start = 0
        while True:
            page = await q.getJobs([state], start, start + 999, True)
            rows += [{"job_id": j.id, "state": state, "name": j.name, "data": j.data, "timestamp": j.timestamp,
                      "processed_on": j.processedOn, "finished_on": j.finishedOn, "attempts_made": j.attemptsMade,
                      "failed_reason": j.failedReason, "stacktrace": j.stacktrace, "returnvalue": j.returnvalue,
                      "opts": j.opts} for j in page]
            if len(page) < 1000:
                break
            start += 1000
    await q.close()
    return pd.DataFrame.from_records(rows)


if __name__ == "__main__":
    print(len(asyncio.run(main(*sys.argv[1:4]))))
