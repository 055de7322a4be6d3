"""daskavatar: face photos to 3D avatars on Dask clusters.

>>> import daskavatar
>>> report = daskavatar.run_job("job.json")          # doctest: +SKIP
>>> print(report.summary())                          # doctest: +SKIP
"""

from daskavatar import config  # noqa: F401  (registers the Dask config defaults)
from daskavatar.exceptions import DaskAvatarError
from daskavatar.jobs.report import JobReport
from daskavatar.jobs.runner import run_job
from daskavatar.jobs.spec import JobSpec

__all__ = ["DaskAvatarError", "JobReport", "JobSpec", "run_job"]
__version__ = "0.1.0"
