"""The job report: counts, timings, rejects by reason, the plugin's result per key.

Written to ``output_path/job.json`` and printed as a summary by the CLI.
"""

from __future__ import annotations

import collections
import dataclasses


@dataclasses.dataclass
class JobReport:
    """Outcome of one job run."""

    spec: dict
    counts: dict
    timings: dict
    rejects_by_reason: dict
    results: list
    """One entry per key (an identity for the built-in plugins): status, photos, and what
    the plugin reports, such as the training PSNR and mesh size of ``NeRF_Avatar``."""
    finished: dict
    """The summary returned by the plugin's ``finish`` step."""
    images: list
    """One entry per input image: identity, status, reason message, face count, pose."""
    memory: dict
    """Peak worker RSS in MiB per stage (process lifetime peak from getrusage)."""
    worker_restarts: int
    resume: dict = dataclasses.field(default_factory=dict)
    """This run's manifest URL and run id, whether it resumed an earlier run, and how many
    map partitions and keys it skipped because they were done."""

    @classmethod
    def build(cls, *, spec, faces, results, finished, timings, worker_restarts) -> JobReport:
        rejects = collections.Counter(f["status"] for f in faces if f["status"] != "ok")
        results = sorted(results, key=lambda a: a["identity"])
        counts = {
            "images": len(faces),
            "usable_faces": sum(f["status"] == "ok" for f in faces),
            "rejected_images": sum(rejects.values()),
            # Only the main face's record counts, because with max_faces_per_image above 1
            # every analysed face of an image has a record with the image's face count.
            "multi_face_images": sum(f["face_count"] > 1 and f["face_index"] == 0
                                     for f in faces),
            "identities": len(results),
            "results": sum(a["status"] == "ok" for a in results),
            "failed_identities": sum(a["status"] == "failed" for a in results),
            "skipped_identities": sum(a["status"] == "skipped" for a in results),
        }
        memory = {
            "map_peak_rss_mib": max((f["worker_peak_rss_mib"] for f in faces
                                     if f["worker_peak_rss_mib"] is not None), default=None),
            "reduce_peak_rss_mib": max((a["worker_peak_rss_mib"] for a in results
                                        if "worker_peak_rss_mib" in a), default=None),
            "finish_peak_rss_mib": finished.get("worker_peak_rss_mib"),
        }
        return cls(spec=spec.to_dict(), counts=counts, timings=timings,
                   rejects_by_reason=dict(sorted(rejects.items())), results=results,
                   finished=finished,
                   images=sorted(faces, key=lambda f: f["row"]), memory=memory,
                   worker_restarts=worker_restarts)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """Return a readable table of the results, the job's counts and what a resumed run
        skipped."""
        lines = [f"{'identity':<32} {'status':<8} {'photos':>6}  details"]
        for result in self.results:
            lines.append(f"{result['identity'][:32]:<32} {result['status']:<8} "
                         f"{result['usable_photos']:>3}/{result['photos']:<2}  "
                         f"{_details(result)}")
        counts = self.counts
        lines.append("")
        lines.append(f"{counts['images']} images, {counts['usable_faces']} usable faces, "
                     f"{counts['rejected_images']} rejected, {counts['results']} identities done, "
                     f"{counts['failed_identities']} failed identities")
        if self.rejects_by_reason:
            reasons = ", ".join(f"{k}: {v}" for k, v in self.rejects_by_reason.items())
            lines.append(f"rejected by reason: {reasons}")
        if counts["multi_face_images"]:
            lines.append(f"images with several faces: {counts['multi_face_images']} "
                         "(face_count in job.json)")
        skipped_partitions = self.resume.get("skipped_map_partitions", 0)
        skipped_keys = self.resume.get("skipped_keys", 0)
        if skipped_partitions or skipped_keys:
            lines.append(f"resumed: skipped {skipped_partitions} of "
                         f"{self.resume.get('map_partitions', 0)} map partitions and "
                         f"{skipped_keys} of {counts['identities']} keys done earlier")
        lines.append(f"peak worker memory: map {self.memory['map_peak_rss_mib']} MiB, "
                     f"reduce {self.memory['reduce_peak_rss_mib']} MiB; "
                     f"worker restarts: {self.worker_restarts}")
        return "\n".join(lines)


_STANDARD_KEYS = {"identity", "status", "photos", "usable_photos", "folder", "rows",
                  "worker_peak_rss_mib", "worker_rss_after_mib", "worker_rss_mib"}


def _details(result: dict, limit: int = 5) -> str:
    """Return a result's reason and message, or for an ``ok`` result up to ``limit`` of its
    scalar fields as ``key=value``, for the table."""
    if result["status"] != "ok":
        parts = [result.get("reason"), result.get("message")]
        return ": ".join(str(part) for part in parts if part)[:100]
    fields = [(key, value) for key, value in result.items()
              if key not in _STANDARD_KEYS and isinstance(value, (int, float, str))
              and not isinstance(value, bool)]
    return ", ".join(f"{key}={value}" for key, value in fields[:limit])
