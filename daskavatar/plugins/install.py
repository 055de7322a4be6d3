"""Installing a plugin package on a running Dask cluster, without restarting it.

``daskavatar plugins install PATH --scheduler ADDRESS`` builds a wheel from a plugin
project folder (or takes a ``.whl``) and registers it with the scheduler as a Dask worker
plugin, :class:`PluginWheel`. Every worker, and every worker that joins later, unpacks the
wheel into its local directory and puts it first on ``sys.path``. The scheduler gets the
same wheel as a scheduler plugin, :class:`SchedulerPluginWheel`, because it unpickles the
task graphs, and those refer to the plugin's class. The wheel's ``.dist-info``
contains the ``daskavatar.plugins`` entry points, so the registry finds the plugin there. Installing another build of the same distribution replaces the worker plugin
of that name: workers drop the old folder from ``sys.path`` and forget the old modules, so
the next task imports the new code.

A job submitted from any client then calls :func:`sync_cluster_plugins`, which fetches the
same wheels from the scheduler and unpacks them in the client process, so the client can
validate the plugin's config and pickle plugin objects for the tasks. Only pure-Python
wheels work this way; a plugin with compiled code or new dependencies goes into the
cluster's image or environment with ``pip`` instead.
"""

from __future__ import annotations

import configparser
import hashlib
import importlib
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from daskavatar.exceptions import InputNotFoundError, PluginError

logger = logging.getLogger(__name__)

PLUGIN_PREFIX = "daskavatar-plugin-"
"""Name prefix of the worker plugins registered by :func:`install_plugin`."""

_active: dict[str, tuple[str, str]] = {}
"""Distribution name to ``(sha256 prefix, folder on sys.path)`` in this process."""


class PluginWheel(WorkerPlugin):
    """A Dask worker plugin that makes a pure-Python wheel importable on every worker."""

    def __init__(self, filename: str, data: bytes):
        match = re.match(r"([^-]+)-([^-]+)-.*\.whl$", os.path.basename(filename))
        if match is None:
            raise PluginError(f"{filename!r} is not a wheel file name "
                              "(distribution-version-python-abi-platform.whl)")
        self.filename = os.path.basename(filename)
        self.distribution = match.group(1).lower().replace("_", "-")
        self.version = match.group(2)
        self.data = data
        self.digest = hashlib.sha256(data).hexdigest()[:16]
        self.name = PLUGIN_PREFIX + self.distribution

    def setup(self, worker) -> None:
        self.activate(os.path.join(worker.local_directory, "daskavatar-plugins"))
        logger.info("Plugin package %s %s installed on worker %s", self.distribution,
                    self.version, worker.address)

    def teardown(self, worker) -> None:
        _deactivate(self.distribution)

    def activate(self, root: str) -> str:
        """Unpack the wheel under ``root`` and import it from there from now on.

        Returns the folder put on ``sys.path``. A previous build of the same distribution
        is taken off ``sys.path`` and its modules are forgotten.
        """
        if _active.get(self.distribution, ("", ""))[0] == self.digest:
            return _active[self.distribution][1]
        _deactivate(self.distribution)

        folder = os.path.join(root, f"{self.distribution}-{self.version}-{self.digest}")
        if not os.path.isdir(folder):
            partial = f"{folder}.{os.getpid()}.partial"
            with zipfile.ZipFile(io.BytesIO(self.data)) as wheel:
                wheel.extractall(partial)
            os.makedirs(root, exist_ok=True)
            try:
                os.replace(partial, folder)
            except OSError:
                # Another process unpacked the same wheel first; its copy is identical.
                shutil.rmtree(partial, ignore_errors=True)

        for module in _top_level_modules(folder):
            _forget_modules(module)
        sys.path.insert(0, folder)
        importlib.invalidate_caches()
        _active[self.distribution] = (self.digest, folder)
        return folder


class SchedulerPluginWheel(SchedulerPlugin):
    """A Dask scheduler plugin that makes the wheel of a :class:`PluginWheel` importable."""

    def __init__(self, wheel: PluginWheel):
        self.wheel = wheel
        self.name = wheel.name

    async def start(self, scheduler) -> None:
        self.wheel.activate(_process_root("scheduler"))
        logger.info("Plugin package %s %s installed on the scheduler", self.wheel.distribution,
                    self.wheel.version)


def install_plugin(path: str, client) -> PluginWheel:
    """Install the plugin project folder or wheel at ``path`` on ``client``'s cluster.

    Runs :func:`load_plugin_wheel`, then :func:`register_wheel`. Returns the registered
    :class:`PluginWheel`.
    """
    wheel = load_plugin_wheel(path)
    register_wheel(wheel, client)
    return wheel


def load_plugin_wheel(path: str) -> PluginWheel:
    """Build or read the wheel at ``path`` and load its plugins in this process.

    A package that does not import, or declares no ``daskavatar.plugins`` entry point,
    raises :class:`PluginError` here, before anything reaches a cluster. The wheel stays
    unpacked on ``sys.path`` of this process.
    """
    from daskavatar.plugins.registry import discover, normalise_name

    if not os.path.exists(path):
        raise InputNotFoundError(f"plugin path {path!r} not found; give a plugin project "
                                 "folder or a .whl file")
    wheel = _read_wheel(path)

    names = _entry_point_names(wheel.data)
    if not names:
        raise PluginError(f"{wheel.filename} declares no entry point in the group "
                          "'daskavatar.plugins'; add one under [options.entry_points] "
                          "(setup.cfg) or [project.entry-points.\"daskavatar.plugins\"]")
    wheel.activate(_process_root("client"))

    # The PluginError below carries the import error, so a warning from discover() would
    # print the same reason twice.
    found = discover(log_errors=False)
    for name in names:
        info = found.get(normalise_name(name))
        if info is None or info.plugin_class is None:
            reason = info.error if info is not None else "not found after unpacking"
            raise PluginError(f"plugin {name!r} from {wheel.filename} cannot be loaded: "
                              f"{reason}")
    return wheel


def register_wheel(wheel: PluginWheel, client) -> None:
    """Register ``wheel`` on the scheduler and workers of ``client``'s cluster.

    A build of the same distribution registered earlier is replaced.
    """
    if wheel.name in client.run_on_scheduler(_scheduler_plugin_names):
        client.unregister_scheduler_plugin(wheel.name)
    client.register_plugin(SchedulerPluginWheel(wheel), name=wheel.name)
    client.register_plugin(wheel, name=wheel.name)
    logger.info("Installed %s %s (plugins %s) on the cluster", wheel.distribution,
                wheel.version, ", ".join(_entry_point_names(wheel.data)))


def sync_cluster_plugins(client) -> list[str]:
    """Unpack, in this process, the plugin wheels installed on ``client``'s cluster.

    Returns the distributions that were installed there. Wheels already active here are
    left alone, so calling this before every job is cheap.
    """
    from distributed.protocol.pickle import loads

    blobs = client.run_on_scheduler(_installed_wheels)
    distributions = []
    for blob in blobs.values():
        wheel = loads(blob)
        wheel.activate(_process_root("client"))
        distributions.append(f"{wheel.distribution} {wheel.version}")
    return distributions


def _installed_wheels(dask_scheduler) -> dict[str, bytes]:
    """Run on the scheduler: the pickled :class:`PluginWheel` objects, by plugin name."""
    return {name: blob for name, blob in dask_scheduler.worker_plugins.items()
            if name.startswith(PLUGIN_PREFIX)}


def _scheduler_plugin_names(dask_scheduler) -> list[str]:
    return list(dask_scheduler.plugins)


def _read_wheel(path: str) -> PluginWheel:
    if os.path.isfile(path):
        if not path.endswith(".whl"):
            raise PluginError(f"plugin path {path!r} is neither a folder nor a .whl file")
        with open(path, "rb") as f:
            return PluginWheel(path, f.read())

    # Without build isolation pip builds with this environment's setuptools and needs no
    # network, which clusters and CI machines often lack. The build runs on a copy, so the
    # user's folder gets no build/ or .egg-info folders.
    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "source")
        shutil.copytree(path, source, ignore=shutil.ignore_patterns(
            ".git", "build", "dist", "*.egg-info", "__pycache__"))
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                   "--quiet", "--wheel-dir", folder, source]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = [name for name in os.listdir(folder) if name.endswith(".whl")]
        if result.returncode != 0 or len(wheels) != 1:
            raise PluginError(f"cannot build a wheel from {path!r}: "
                              f"{(result.stderr or result.stdout).strip()[-800:]}")
        with open(os.path.join(folder, wheels[0]), "rb") as f:
            return PluginWheel(wheels[0], f.read())


def _entry_point_names(data: bytes) -> list[str]:
    """Return the names the wheel declares in the ``daskavatar.plugins`` group."""
    from daskavatar.plugins.registry import GROUP

    with zipfile.ZipFile(io.BytesIO(data)) as wheel:
        files = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
        if not files:
            return []
        parser = configparser.ConfigParser(delimiters=("=",))
        parser.optionxform = str
        parser.read_string(wheel.read(files[0]).decode())
    return list(parser[GROUP]) if parser.has_section(GROUP) else []


def _deactivate(distribution: str) -> None:
    _, folder = _active.pop(distribution, (None, None))
    if folder is None:
        return
    for module in _top_level_modules(folder):
        _forget_modules(module)
    while folder in sys.path:
        sys.path.remove(folder)
    importlib.invalidate_caches()


def _top_level_modules(folder: str) -> list[str]:
    names = []
    for entry in os.listdir(folder):
        if entry.endswith((".dist-info", ".data")):
            continue
        if entry.endswith(".py"):
            names.append(entry[:-3])
        elif os.path.isdir(os.path.join(folder, entry)):
            names.append(entry)
    return names


def _forget_modules(top_level: str) -> None:
    for name in [n for n in sys.modules if n == top_level or n.startswith(top_level + ".")]:
        del sys.modules[name]


def _process_root(role: str) -> str:
    return os.path.join(tempfile.gettempdir(), f"daskavatar-plugins-{role}-{os.getuid()}")


