"""The job JSON and its validation.

A job arrives as JSON from the CLI, the REST API or Python::

    {"plugin_name": "NeRF_Avatar",
     "config": {"output_resolution": "128", "max_iterations": "300", "output_format": "glb"},
     "input_paths": ["faces/**/*.jpg"], "output_path": "out/",
     "num_map_tasks": 4, "num_reduce_tasks": 2}

Config values may arrive as strings and are parsed here. Unknown keys are an error that names
the key, so a typo never silently falls back to a default. Defaults come from the Dask config
(``daskavatar.job``), see :mod:`daskavatar.config`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from daskavatar import config as _config
from daskavatar.exceptions import JobSpecError

SPEC_KEYS = ("plugin_name", "config", "input_paths", "output_path", "num_map_tasks",
             "num_reduce_tasks")
OUTPUT_FORMATS = ("obj", "ply", "glb")
PLUGIN_NAMES = ("NeRF_Avatar",)


@dataclasses.dataclass(frozen=True)
class AvatarConfig:
    """Settings of the NeRF_Avatar job, from the job JSON ``config`` block."""

    output_resolution: int
    """Side of the aligned square face crop in pixels; also the NeRF training image size."""
    max_iterations: int
    """NeRF optimisation steps per identity."""
    output_format: str
    """Mesh file format: ``obj``, ``ply`` or ``glb``."""
    preset: str
    """NeRF preset name (``paper`` or ``small``), see :mod:`daskavatar.nerf.presets`."""
    identities_csv: str | None
    """CSV with ``file,person_id`` rows; overrides identities taken from folder names."""
    detector_upsample: int
    """Times dlib's HOG detector upsamples the image; each step finds faces half as large."""
    min_detection_score: float
    """Detections scoring below this are ignored."""
    min_face_size: int
    """Faces whose detection box side is below this many pixels are rejected."""
    max_image_pixels: int
    """Images with more pixels are rejected before decoding."""
    focal_length_factor: float
    """Assumed focal length in pixels as a multiple of the longer image side."""
    crop_scale: float
    """Crop side as a multiple of the larger extent of the 68 landmarks."""
    mesh_resolution: int
    """Marching-cubes grid cells per axis."""
    preview_views: int
    """Number of turntable views in ``preview.png``."""
    preview_resolution: int
    """Side of each preview view in pixels."""
    seed: int
    """Seed of the NeRF initialisation and ray sampling."""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AvatarConfig:
        """Build the config from the job's ``config`` block over the Dask config defaults.

        Raises :class:`JobSpecError` for an unknown key or a value of the wrong type.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise JobSpecError(
                f"unknown config key {unknown[0]!r}; valid keys are: {', '.join(sorted(fields))}")

        parsed = {}
        for name, field in fields.items():
            raw = values.get(name, _config.get(f"job.{name}"))
            parsed[name] = _parse_value(name, raw, field.type)

        result = cls(**parsed)
        result._validate()
        return result

    def _validate(self) -> None:
        if self.output_format not in OUTPUT_FORMATS:
            raise JobSpecError(f"invalid output_format {self.output_format!r}; "
                               f"use one of {', '.join(OUTPUT_FORMATS)}")
        if not 32 <= self.output_resolution <= 1024:
            raise JobSpecError(f"invalid output_resolution {self.output_resolution}; "
                               "use a value from 32 to 1024 pixels")
        if self.max_iterations < 1:
            raise JobSpecError(f"invalid max_iterations {self.max_iterations}; use 1 or more")
        if not 16 <= self.mesh_resolution <= 256:
            raise JobSpecError(f"invalid mesh_resolution {self.mesh_resolution}; "
                               "use a value from 16 to 256")
        if self.crop_scale < 1.0:
            raise JobSpecError(f"invalid crop_scale {self.crop_scale}; use 1.0 or more")

        # Imported here: the presets module is light, but keeping jax out of the spec path
        # lets the CLI validate a job without importing the NeRF stack.
        from daskavatar.nerf.presets import PRESETS
        if self.preset not in PRESETS:
            raise JobSpecError(f"unknown NeRF preset {self.preset!r}; "
                               f"use one of {', '.join(sorted(PRESETS))}")


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """A validated job: which plugin runs on which inputs, and where the outputs go."""

    plugin_name: str
    config: AvatarConfig
    input_paths: tuple[str, ...]
    output_path: str
    num_map_tasks: int
    num_reduce_tasks: int
    raw_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The ``config`` block as the user wrote it, kept for the job report."""

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> JobSpec:
        """Validate a job JSON object; raise :class:`JobSpecError` naming the bad value."""
        if not isinstance(spec, dict):
            raise JobSpecError(f"a job must be a JSON object, got {type(spec).__name__}")
        unknown = sorted(set(spec) - set(SPEC_KEYS))
        if unknown:
            raise JobSpecError(f"unknown job key {unknown[0]!r}; valid keys are: "
                               f"{', '.join(SPEC_KEYS)}")
        for key in ("input_paths", "output_path"):
            if key not in spec:
                raise JobSpecError(f"missing job key {key!r}")

        plugin_name = spec.get("plugin_name", "NeRF_Avatar")
        if _normalise_name(plugin_name) not in {_normalise_name(p) for p in PLUGIN_NAMES}:
            raise JobSpecError(f"unknown plugin_name {plugin_name!r}; installed plugins: "
                               f"{', '.join(PLUGIN_NAMES)}")

        input_paths = spec["input_paths"]
        if isinstance(input_paths, str):
            input_paths = [input_paths]
        if not input_paths or not all(isinstance(p, str) and p for p in input_paths):
            raise JobSpecError(f"invalid input_paths {input_paths!r}; give a list of globs or URLs")

        output_path = spec["output_path"]
        if not isinstance(output_path, str) or not output_path:
            raise JobSpecError(f"invalid output_path {output_path!r}; give a folder path or URL")

        raw_config = spec.get("config") or {}
        if not isinstance(raw_config, dict):
            raise JobSpecError(f"invalid config {raw_config!r}; give a JSON object")

        return cls(
            plugin_name="NeRF_Avatar",
            config=AvatarConfig.from_dict(raw_config),
            input_paths=tuple(input_paths),
            output_path=output_path,
            num_map_tasks=_parse_count("num_map_tasks", spec.get("num_map_tasks", 1)),
            num_reduce_tasks=_parse_count("num_reduce_tasks", spec.get("num_reduce_tasks", 1)),
            raw_config=dict(raw_config),
        )

    @classmethod
    def from_file(cls, path: str) -> JobSpec:
        """Read and validate a job JSON file."""
        if not os.path.exists(path):
            raise JobSpecError(f"job file {path!r} not found")
        with open(path) as f:
            try:
                spec = json.load(f)
            except json.JSONDecodeError as error:
                raise JobSpecError(f"job file {path!r} is not valid JSON: {error}") from error
        return cls.from_dict(spec)

    def to_dict(self) -> dict[str, Any]:
        """Return the job JSON, with the effective config values filled in."""
        return {
            "plugin_name": self.plugin_name,
            "config": dataclasses.asdict(self.config),
            "input_paths": list(self.input_paths),
            "output_path": self.output_path,
            "num_map_tasks": self.num_map_tasks,
            "num_reduce_tasks": self.num_reduce_tasks,
        }


def _normalise_name(name: str) -> str:
    return str(name).replace("_", "").replace("-", "").lower()


def _parse_count(key: str, value: Any) -> int:
    count = _parse_value(key, value, "int")
    if count < 1:
        raise JobSpecError(f"invalid {key} {value!r}; use 1 or more")
    return count


def _parse_value(name: str, value: Any, type_name: str) -> Any:
    """Parse ``value`` to the annotated type; strings such as ``"300"`` are accepted."""
    type_name = str(type_name)
    if value is None:
        if "None" in type_name:
            return None
        raise JobSpecError(f"missing value for config key {name!r}")

    try:
        if type_name.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(str(value).strip()) if isinstance(value, str) else int(value)
        if type_name.startswith("float"):
            return float(value)
    except (TypeError, ValueError):
        raise JobSpecError(f"invalid value {value!r} for config key {name!r}; "
                           f"expected {type_name.split(' ')[0]}") from None

    if not isinstance(value, str):
        raise JobSpecError(f"invalid value {value!r} for config key {name!r}; expected a string")
    return value.strip().lower() if name in ("output_format", "preset") else value
