"""Many jobs on this machine, resumable (issue 15): `collect_jobs` reads folders, files and manifests into
`Job`s (one subject each), `run_batch` runs them on a local process pool (`runner`). A Ray engine is not built
yet."""
from .jobs import Job, collect_jobs
from .runner import BatchConfig, BatchSummary, run_batch, run_job

__all__ = ["BatchConfig", "BatchSummary", "Job", "collect_jobs", "run_batch", "run_job"]
