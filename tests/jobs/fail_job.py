"""An msrun job that goes wrong, to test that the launcher reports it and leaves nothing running.

    python tests/jobs/fail_job.py raise   # rank 1 raises while rank 0 waits for it in a collective
    python tests/jobs/fail_job.py hang    # every worker waits forever (the launcher's timeout stops it)
    python tests/jobs/fail_job.py disagree   # the workers hold different results where they must agree
"""

from gscore import dist

dist.init()  # first: msrun's scheduler process stops here

import sys  # noqa: E402
import time  # noqa: E402

if __name__ == "__main__":
    if sys.argv[1] == "raise" and dist.rank() == 1:
        raise RuntimeError("rank 1 failed on purpose")
    if sys.argv[1] == "hang":
        time.sleep(3600)
    if sys.argv[1] == "disagree":
        dist.agree("a result", f"{dist.rank():064x}")
    dist.barrier()
