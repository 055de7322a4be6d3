"""Finding plugins by name through the ``daskavatar.plugins`` entry-point group.

Every installed distribution may declare plugins in that group; the two built-in ones are
declared in daskavatar's own ``setup.cfg``. Names are matched the way users write them:
``NeRF_Avatar``, ``nerf-avatar`` and ``nerfavatar`` are the same plugin. A plugin whose
import fails is logged with its reason and left out, so one broken package cannot stop the
others. Plugins installed on a running cluster are made visible here by
:func:`daskavatar.plugins.install.sync_cluster_plugins`.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging

from daskavatar.exceptions import JobSpecError

logger = logging.getLogger(__name__)

GROUP = "daskavatar.plugins"


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """One entry point of the group: the loaded class, or the reason it could not load."""

    name: str
    target: str
    """The entry point's ``module:Class``."""
    distribution: str
    version: str
    plugin_class: type | None = None
    error: str | None = None


def normalise_name(name: str) -> str:
    """Return the lookup form of a plugin name: lower case without ``_``, ``-`` or spaces."""
    return "".join(ch for ch in str(name).lower() if ch not in "_- ")


def discover(*, log_errors: bool = True) -> dict[str, PluginInfo]:
    """Load every plugin of the entry-point group; keys are normalised names.

    Entry points are read again on every call, so a plugin installed since the last call
    is found. Broken plugins are returned with ``error`` set and, when ``log_errors`` is
    true, logged as warnings.
    """
    from daskavatar.plugins.base import MapReducePlugin

    found = {}
    for entry_point in importlib.metadata.entry_points(group=GROUP):
        dist = entry_point.dist
        info = PluginInfo(name=entry_point.name, target=entry_point.value,
                          distribution=dist.name if dist else "unknown",
                          version=dist.version if dist else "unknown")
        try:
            plugin_class = entry_point.load()
            if not (isinstance(plugin_class, type) and issubclass(plugin_class, MapReducePlugin)):
                raise TypeError(f"{entry_point.value} is not a MapReducePlugin subclass")
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            if log_errors:
                logger.warning("Skipping plugin %r (%s %s): %s", entry_point.name,
                               info.distribution, info.version, reason)
            info = dataclasses.replace(info, error=reason)
        else:
            info = dataclasses.replace(info, plugin_class=plugin_class)
        found.setdefault(normalise_name(entry_point.name), info)
    return found


def get_plugin(name: str) -> type:
    """Return the plugin class named ``name``; raise :class:`JobSpecError` listing the others."""
    plugins = discover()
    info = plugins.get(normalise_name(name))
    if info is not None and info.plugin_class is not None:
        return info.plugin_class

    available = sorted(p.name for p in plugins.values() if p.plugin_class is not None)
    if info is not None:
        raise JobSpecError(f"plugin {name!r} is installed but cannot be loaded ({info.error}); "
                           f"fix or reinstall {info.distribution}, or use one of: "
                           f"{', '.join(available)}")
    raise JobSpecError(f"unknown plugin_name {name!r}; installed plugins: {', '.join(available)}. "
                       "Install others with 'pip install' or 'daskavatar plugins install'")
