"""The job JSON and its validation.

A job arrives as JSON from the CLI, the REST API or Python::

    {"plugin_name": "NeRF_Avatar",
     "config": {"output_resolution": "128", "max_iterations": "300", "output_format": "glb"},
     "input_paths": ["faces/**/*.jpg"], "output_path": "out/",
     "num_map_tasks": 4, "num_reduce_tasks": 2}

The ``config`` block contains the map-stage keys of :class:`FaceConfig`, shared by every
plugin, the keys of the selected plugin's ``config_class``, and optionally
``storage_options``: a JSON object of fsspec options (for ``s3://``: ``key``, ``secret``,
``endpoint_url``, ``client_kwargs``) used for every input and output path of the job. Values may arrive as strings
and are parsed here. Unknown keys are an error that names the key, so a typo never silently
falls back to a default. Defaults come from the Dask config (``daskavatar.job`` and
``daskavatar.plugins.<plugin-name>``), see :mod:`daskavatar.config`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from daskavatar import config as _config
from daskavatar.exceptions import JobSpecError

IDENTITY_SOURCES = ("labels", "cluster")
MAX_FACES_PER_IMAGE = 32
"""Largest ``max_faces_per_image``; each image reserves that many rows of ``features.zarr``."""
MAX_CNN_SIDE = 320
"""Largest ``cnn_detector_side``; the CNN's peak memory grows with the square of the side."""
SPEC_KEYS = ("plugin_name", "config", "input_paths", "output_path", "num_map_tasks",
             "num_reduce_tasks")
DEFAULT_PLUGIN = "NeRF_Avatar"


@dataclasses.dataclass(frozen=True)
class FaceConfig:
    """Settings of the map stage that every plugin shares, from the job ``config`` block."""

    output_resolution: int
    """Side of the aligned square face crop in pixels; also the NeRF training image size."""
    identities_csv: str | None
    """CSV with ``file,person_id`` rows; overrides identities taken from folder names."""
    min_detection_score: float
    """Detections scoring below this are ignored (dlib's HOG margin; about 1 for a clear face)."""
    min_face_size: int
    """Faces whose detection box side is below this many pixels are rejected as
    ``face_too_small``. The detector's fine pass also looks for faces down to this size."""
    detector_coarse_side: int
    """Longer side in pixels of the copy the detector's fast first pass runs on."""
    detector_max_pixels: int
    """Most pixels of the upsampled copy of the fine detection pass; bounds its memory."""
    max_faces_per_image: int
    """Faces analysed per image, largest first. Above 1, each image owns that many rows of
    ``features.zarr`` and every analysed face becomes its own record; further faces are only
    counted."""
    count_all_faces: bool
    """Always run the fine detection pass, so small faces beside a large one are counted."""
    cnn_detector_side: int
    """Longer side of the copy dlib's CNN detector runs on when HOG finds no face; 0 is off.
    The CNN finds faces turned far to the side but takes seconds per image, and at 320 px
    its peak memory is about 165 MiB above the process's (at 450 px, 235 MiB)."""
    max_image_pixels: int
    """Images with more pixels are rejected as ``too_large`` before decoding."""
    max_decode_side: int
    """JPEGs whose longer side is above this are decoded at 1/2, 1/4 or 1/8 size; 0 is off."""
    min_sharpness: float
    """Faces whose variance of the Laplacian (at 128 px) is below this are ``too_blurred``."""
    max_yaw: float
    """Faces turned further than this many degrees are rejected as ``pose_out_of_range``."""
    max_pitch: float
    """Largest absolute pitch in degrees."""
    max_roll: float
    """Largest absolute roll in degrees."""
    max_outside_fraction: float
    """Faces with a larger share of their landmark box outside the image are ``face_cut_off``."""
    identities: str
    """Where identities come from: ``labels`` (folders or ``identities_csv``) or ``cluster``
    (128-D face descriptors clustered; images with a label keep it)."""
    cluster_threshold: float
    """Largest descriptor distance of two faces of one person when ``identities`` is ``cluster``."""
    focal_length_factor: float
    """Assumed focal length in pixels as a multiple of the longer image side."""
    crop_scale: float
    """Crop side as a multiple of the larger extent of the 68 landmarks."""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FaceConfig:
        """Build the map-stage config from ``values`` over the defaults in ``daskavatar.job``."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise JobSpecError(f"unknown map-stage config key {unknown[0]!r}")
        return parse_config(cls, values, defaults_key="job")

    def validate(self) -> None:
        if not 32 <= self.output_resolution <= 1024:
            raise JobSpecError(f"invalid output_resolution {self.output_resolution}; "
                               "use a value from 32 to 1024 pixels")
        if self.crop_scale < 1.0:
            raise JobSpecError(f"invalid crop_scale {self.crop_scale}; use 1.0 or more")
        if self.identities not in IDENTITY_SOURCES:
            raise JobSpecError(f"invalid identities {self.identities!r}; use one of "
                               f"{', '.join(IDENTITY_SOURCES)}")
        if not 0.0 <= self.max_outside_fraction <= 1.0:
            raise JobSpecError(f"invalid max_outside_fraction {self.max_outside_fraction}; "
                               "use a value from 0 to 1")
        if self.cnn_detector_side > MAX_CNN_SIDE:
            raise JobSpecError(f"invalid cnn_detector_side {self.cnn_detector_side}; use at "
                               f"most {MAX_CNN_SIDE} so the CNN detector fits in a 512 MB "
                               "worker, or 0 to turn it off")
        if not 1 <= self.max_faces_per_image <= MAX_FACES_PER_IMAGE:
            raise JobSpecError(f"invalid max_faces_per_image {self.max_faces_per_image}; use "
                               f"a value from 1 to {MAX_FACES_PER_IMAGE}")
        for name in ("min_face_size", "detector_coarse_side", "detector_max_pixels",
                     "max_decode_side", "cnn_detector_side"):
            if getattr(self, name) < 0:
                raise JobSpecError(f"invalid {name} {getattr(self, name)}; use 0 or more")


def parse_config(config_class: type, values: dict[str, Any], *, defaults_key: str,
                 defaults: dict[str, Any] | None = None):
    """Build ``config_class`` from ``values``, parsing strings such as ``"300"``.

    A field missing from ``values`` takes, in order, its value in ``defaults``, the Dask
    config ``daskavatar.<defaults_key>.<field>``, or the dataclass default. ``values`` must
    only hold fields of ``config_class``. A ``validate()`` method of the class is called
    last; it raises :class:`JobSpecError` (or ``ValueError``) naming the bad value.
    """
    parsed = {}
    for field in dataclasses.fields(config_class):
        if field.name in values:
            raw = values[field.name]
        elif defaults and field.name in defaults:
            raw = defaults[field.name]
        else:
            raw = _config.get(f"{defaults_key}.{field.name}", _MISSING)
            if raw is _MISSING and field.default is not dataclasses.MISSING:
                raw = field.default
            elif raw is _MISSING:
                raise JobSpecError(f"missing value for config key {field.name!r}; set it in "
                                   f"the job config or in daskavatar.{defaults_key}")
        parsed[field.name] = _parse_value(field.name, raw, field.type)

    result = config_class(**parsed)
    validate = getattr(result, "validate", None)
    if validate is not None:
        try:
            validate()
        except JobSpecError:
            raise
        except ValueError as error:
            raise JobSpecError(str(error)) from None
    return result


_MISSING = object()


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """A validated job: which plugin runs on which inputs, and where the outputs go."""

    plugin_name: str
    """The plugin's registered name, whatever case the job used."""
    face: FaceConfig
    plugin_config: Any
    """The plugin's own settings, an instance of its ``config_class``."""
    input_paths: tuple[str, ...]
    output_path: str
    num_map_tasks: int
    num_reduce_tasks: int
    plugin_class: type = dataclasses.field(default=None, compare=False, repr=False)
    raw_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The ``config`` block as the user wrote it, without ``storage_options``."""
    storage_options: dict[str, Any] | None = dataclasses.field(default=None, compare=False,
                                                                repr=False)
    """fsspec options from the ``config`` block; never written to reports or the manifest,
    because they may hold credentials."""

    @classmethod
    def from_dict(cls, spec: dict[str, Any], *, plugin_class: type | None = None) -> JobSpec:
        """Validate a job JSON object; raise :class:`JobSpecError` naming the bad value.

        The plugin is looked up by ``plugin_name`` among the installed ones unless
        ``plugin_class`` is given.
        """
        if not isinstance(spec, dict):
            raise JobSpecError(f"a job must be a JSON object, got {type(spec).__name__}")
        unknown = sorted(set(spec) - set(SPEC_KEYS))
        if unknown:
            raise JobSpecError(f"unknown job key {unknown[0]!r}; valid keys are: "
                               f"{', '.join(SPEC_KEYS)}")
        for key in ("input_paths", "output_path"):
            if key not in spec:
                raise JobSpecError(f"missing job key {key!r}")

        if plugin_class is None:
            from daskavatar.plugins.registry import get_plugin
            plugin_class = get_plugin(spec.get("plugin_name", DEFAULT_PLUGIN))

        input_paths = spec["input_paths"]
        if isinstance(input_paths, str):
            input_paths = [input_paths]
        if not input_paths or not all(isinstance(p, str) and p for p in input_paths):
            raise JobSpecError(f"invalid input_paths {input_paths!r}; give a list of globs or URLs")

        output_path = spec["output_path"]
        if not isinstance(output_path, str) or not output_path:
            raise JobSpecError(f"invalid output_path {output_path!r}; give a folder path or URL")
        # Workers may run in another folder, so a relative local path is resolved here,
        # against the folder of the process that submits the job.
        if "://" not in output_path:
            output_path = os.path.abspath(output_path)

        raw_config = spec.get("config") or {}
        if not isinstance(raw_config, dict):
            raise JobSpecError(f"invalid config {raw_config!r}; give a JSON object")
        raw_config = dict(raw_config)
        storage_options = raw_config.pop("storage_options", None)
        if storage_options is not None and not isinstance(storage_options, dict):
            # The value is left out of the message because it may be a credential.
            raise JobSpecError(f"invalid storage_options in the job config: a "
                               f"{type(storage_options).__name__}, not a JSON object; give "
                               "an object of fsspec options such as "
                               '{"endpoint_url": "http://host:9000"}')
        face, plugin_config = _split_config(raw_config, plugin_class)

        return cls(
            plugin_name=plugin_class.name,
            face=face,
            plugin_config=plugin_config,
            input_paths=tuple(input_paths),
            output_path=output_path,
            num_map_tasks=_parse_count("num_map_tasks", spec.get("num_map_tasks", 1)),
            num_reduce_tasks=_parse_count("num_reduce_tasks", spec.get("num_reduce_tasks", 1)),
            plugin_class=plugin_class,
            raw_config=raw_config,
            storage_options=storage_options,
        )

    def make_plugin(self):
        """Return a new plugin object configured for this job."""
        return self.plugin_class(self.plugin_config, face=self.face)

    @classmethod
    def from_file(cls, path: str) -> JobSpec:
        """Read and validate a job JSON file."""
        return cls.from_dict(cls.read_file(path))

    @staticmethod
    def read_file(path: str) -> dict[str, Any]:
        """Read a job JSON file without validating it; raise :class:`JobSpecError`."""
        if not os.path.exists(path):
            raise JobSpecError(f"job file {path!r} not found")
        with open(path) as f:
            try:
                return json.load(f)
            except json.JSONDecodeError as error:
                raise JobSpecError(f"job file {path!r} is not valid JSON: {error}") from error

    def to_dict(self) -> dict[str, Any]:
        """Return the job JSON, with the effective config values filled in.

        ``storage_options`` are left out because they may hold credentials.
        """
        return {
            "plugin_name": self.plugin_name,
            "config": {**dataclasses.asdict(self.face), **dataclasses.asdict(self.plugin_config)},
            "input_paths": list(self.input_paths),
            "output_path": self.output_path,
            "num_map_tasks": self.num_map_tasks,
            "num_reduce_tasks": self.num_reduce_tasks,
        }


def _split_config(raw_config: dict[str, Any], plugin_class: type):
    """Parse the ``config`` block into the map-stage and the plugin's settings."""
    face_keys = {f.name for f in dataclasses.fields(FaceConfig)}
    plugin_keys = {f.name for f in dataclasses.fields(plugin_class.config_class)}
    unknown = sorted(set(raw_config) - face_keys - plugin_keys)
    if unknown:
        raise JobSpecError(f"unknown config key {unknown[0]!r} for plugin {plugin_class.name}; "
                           f"valid keys are: {', '.join(sorted(face_keys | plugin_keys))}")

    face = parse_config(FaceConfig, {k: v for k, v in raw_config.items() if k in face_keys},
                        defaults_key="job", defaults=plugin_class.face_defaults)
    plugin_config = parse_config(
        plugin_class.config_class, {k: v for k, v in raw_config.items() if k in plugin_keys},
        defaults_key=f"plugins.{plugin_class.name.lower().replace('_', '-')}")
    return face, plugin_config


def _parse_count(key: str, value: Any) -> int:
    count = _parse_value(key, value, "int")
    if count < 1:
        raise JobSpecError(f"invalid {key} {value!r}; use 1 or more")
    return count


def _parse_value(name: str, value: Any, type_name: str) -> Any:
    """Parse ``value`` to the annotated type; strings such as ``"300"`` are accepted."""
    type_name = type_name.__name__ if isinstance(type_name, type) else str(type_name)
    if value is None:
        if "None" in type_name:
            return None
        raise JobSpecError(f"missing value for config key {name!r}")

    if type_name.startswith("bool"):
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise JobSpecError(f"invalid value {value!r} for config key {name!r}; "
                           "expected true or false")

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
    return value.strip().lower() if name in _LOWER_CASE_KEYS else value


_LOWER_CASE_KEYS = ("output_format", "preset", "archive", "identities")
"""Keys whose values are names from a fixed list, matched in any case."""
