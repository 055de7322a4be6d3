"""MapReduce plugins that a job names with ``plugin_name``.

Two are built in: ``NeRF_Avatar`` (a 3D avatar per identity) and ``GAN_Dataset`` (a
training set for 3D-aware GANs). :mod:`~daskavatar.plugins.base` defines the interface,
:mod:`~daskavatar.plugins.registry` finds plugins by entry point and
:mod:`~daskavatar.plugins.install` installs them on a running cluster.
"""

from daskavatar.plugins.base import FinishContext, MapContext, MapReducePlugin, ReduceContext

__all__ = ["FinishContext", "MapContext", "MapReducePlugin", "ReduceContext"]
