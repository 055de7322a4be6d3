"""Finding plugins by entry point, and validating their config before any compute."""

import importlib
import logging
import sys
import textwrap

import pytest

from daskavatar.exceptions import JobSpecError
from daskavatar.jobs.runner import run_job
from daskavatar.jobs.spec import JobSpec
from daskavatar.plugins.registry import discover, get_plugin, normalise_name

PLUGIN_MODULE = '''
import dataclasses

from daskavatar.plugins import MapReducePlugin


@dataclasses.dataclass(frozen=True)
class CountConfig:
    min_photos: int = 1

    def validate(self):
        if self.min_photos < 1:
            raise ValueError(f"invalid min_photos {self.min_photos}; use 1 or more")


class PhotoCount(MapReducePlugin):
    name = "Photo_Count"
    config_class = CountConfig
    features = ("landmarks",)

    def reduce(self, context):
        return {"status": "ok", "count": len(context.records)}
'''


def make_package(root, name, version, module_source, entry_points):
    """Write an importable distribution with a dist-info folder under ``root``."""
    (root / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[daskavatar.plugins]\n{lines}")


@pytest.fixture
def test_packages(tmp_path, monkeypatch):
    """A working test plugin and a plugin whose import fails, both on ``sys.path``."""
    make_package(tmp_path, "photo_count", "1.2.3", PLUGIN_MODULE,
                 {"Photo_Count": "photo_count:PhotoCount"})
    make_package(tmp_path, "broken_plugin", "0.1", "import no_such_module_anywhere\n",
                 {"Broken_Plugin": "broken_plugin:Plugin"})
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path
    for name in ("photo_count", "broken_plugin"):
        sys.modules.pop(name, None)


def test_finds_built_in_and_test_plugins(test_packages):
    plugins = discover()

    assert plugins["nerfavatar"].plugin_class.__name__ == "NeRFAvatar"
    assert plugins["gandataset"].plugin_class.__name__ == "GANDataset"
    assert plugins["photocount"].version == "1.2.3"
    assert plugins["photocount"].distribution == "photo_count"
    assert get_plugin("photo-count").name == "Photo_Count"


@pytest.mark.parametrize("written", ["NeRF_Avatar", "nerf_avatar", "NERF-AVATAR", "nerfavatar"])
def test_names_match_as_users_write_them(written):
    assert normalise_name(written) == "nerfavatar"
    assert get_plugin(written).name == "NeRF_Avatar"


def test_broken_plugin_is_skipped_with_reason(test_packages, caplog):
    with caplog.at_level(logging.WARNING, logger="daskavatar.plugins.registry"):
        plugins = discover()

    assert plugins["brokenplugin"].plugin_class is None
    assert "No module named 'no_such_module_anywhere'" in plugins["brokenplugin"].error
    assert "Skipping plugin 'Broken_Plugin'" in caplog.text
    assert plugins["photocount"].plugin_class is not None
    with pytest.raises(JobSpecError, match="plugin 'broken_plugin' is installed but cannot "
                                           "be loaded"):
        get_plugin("broken_plugin")


def test_unknown_name_lists_installed_plugins(test_packages):
    with pytest.raises(JobSpecError) as raised:
        get_plugin("Gaussian_Splat")

    assert str(raised.value).startswith(
        "unknown plugin_name 'Gaussian_Splat'; installed plugins: GAN_Dataset, NeRF_Avatar, "
        "Photo_Count.")


def test_plugin_config_keys_and_defaults(test_packages):
    job = {"plugin_name": "photo_count", "config": {"min_photos": "3", "min_face_size": "50"},
           "input_paths": ["x/*.jpg"], "output_path": "out"}

    spec = JobSpec.from_dict(job)

    assert spec.plugin_config.min_photos == 3
    assert spec.face.min_face_size == 50
    assert spec.face.output_resolution == 128
    gan = JobSpec.from_dict(dict(job, plugin_name="GAN_Dataset", config={}))
    assert gan.face.output_resolution == 512
    assert gan.plugin_config.archive == "zip"


@pytest.mark.parametrize("config, message", [
    ({"min_photos": "0"}, "invalid min_photos 0; use 1 or more"),
    ({"max_iterations": "10"}, "unknown config key 'max_iterations' for plugin Photo_Count"),
    ({"min_photos": "many"}, "invalid value 'many' for config key 'min_photos'"),
])
def test_bad_plugin_config_fails_before_compute(test_packages, cluster_client, tmp_path,
                                                 config, message):
    job = {"plugin_name": "Photo_Count", "config": config,
           "input_paths": [str(tmp_path / "*.jpg")], "output_path": str(tmp_path / "out")}
    transitions = cluster_client.run_on_scheduler(_transition_count)

    with pytest.raises(JobSpecError, match=message):
        run_job(job, cluster_client, progress=False)

    assert cluster_client.run_on_scheduler(_transition_count) == transitions
    assert not (tmp_path / "out").exists()


def test_gan_dataset_config_checked():
    job = {"plugin_name": "gan_dataset", "config": {"archive": "rar"},
           "input_paths": ["x"], "output_path": "out"}

    with pytest.raises(JobSpecError, match="invalid archive 'rar'; use one of zip, folder"):
        JobSpec.from_dict(job)


def _transition_count(dask_scheduler) -> int:
    return len(dask_scheduler.transition_log)
