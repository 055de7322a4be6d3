"""Compiled NeRF programs: built once per job on the client, executed on the workers.

Compiling the training step of the ``paper`` preset with XLA raises a process's memory by
about 190 MiB. Importing JAX and starting its CPU backend already take about 270 MiB, so a
worker that compiles passes the 464 MiB at which Dask restarts a 512 MB worker (95 % of the
limit). Loading the compiled executables costs about 55 MiB instead. The figures were
measured with ``benchmarks/compile_memory.py``. So the client compiles the three
programs of a preset ahead of time (``jax.jit(...).lower(...).compile()``), serialises
them, and the reduce tasks deserialise them: workers never run XLA's compiler. All shapes
are fixed by the preset, so one set of programs serves every identity of a job.

NOTE: an executable compiled on the client targets the client's CPU. Loading can fail on a
remote cluster whose workers run on different CPUs. The workers then compile locally and
log a warning, and compiling the ``paper`` preset needs more than a 512 MB worker has.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax

from daskavatar.nerf.field import apply_field, init_params
from daskavatar.nerf.presets import NerfPreset
from daskavatar.nerf.render import composite
from daskavatar.nerf.views import BACKGROUND
from daskavatar.nerf.sampler import importance_samples, ray_points, stratified_samples

logger = logging.getLogger(__name__)

jax.config.update("jax_platforms", "cpu")

PROGRAM_NAMES = ("train_step", "render", "query")


@dataclasses.dataclass
class Programs:
    """Callables of one preset: ``train_step``, ``render`` and ``query``."""

    preset: NerfPreset
    train_step: object
    render: object
    query: object
    initial_opt_state: object
    """Adam's state before the first step, as NumPy arrays.

    It is computed where the programs are compiled, because ``optimizer.init`` runs JAX
    operations eagerly and each eager operation compiles a small XLA program, which on a
    worker raised memory by tens of MiB.
    """


def make_optimizer(preset: NerfPreset):
    """Adam whose learning rate is a state entry, so the host sets it every step."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=preset.learning_rate,
                                                eps=preset.adam_eps)


def _functions(preset: NerfPreset):
    optimizer = make_optimizer(preset)
    background = jnp.asarray(BACKGROUND, dtype=jnp.float32)

    def render_samples(params, rays_o, rays_d, t_vals):
        points = ray_points(rays_o, rays_d, t_vals)
        directions = jnp.broadcast_to(rays_d[:, None, :], points.shape)
        sigma, rgb = apply_field(params, points, directions, preset)
        return composite(sigma, rgb, t_vals, background)

    def render_rays(params, rays_o, rays_d, near, far, jitter):
        t_vals = stratified_samples(near, far, jitter)
        if not preset.num_importance:
            return render_samples(params, rays_o, rays_d, t_vals)

        # Hierarchical sampling with one network: a pass without gradients finds where the
        # weights are, and the rendered pass adds samples there.
        coarse = render_samples(jax.lax.stop_gradient(params), rays_o, rays_d, t_vals)
        t_vals = importance_samples(t_vals, coarse["weights"], preset.num_importance)
        return render_samples(params, rays_o, rays_d, t_vals)

    def train_step(params, opt_state, rays_o, rays_d, near, far, target, jitter, learning_rate):
        """Take one Adam step on ``batch_rays`` rays ``(R, 3)``, bounds ``(R,)``, jitter ``(R, S)``."""
        num_chunks = preset.batch_rays // preset.chunk_rays

        def split(array):
            return array.reshape(num_chunks, preset.chunk_rays, *array.shape[1:])

        def chunk_loss(params, chunk):
            out = render_rays(params, *chunk[:4], chunk[5])
            return jnp.sum((out["rgb"] - chunk[4]) ** 2)

        # Gradients are accumulated over micro-batches so activation memory is that of one
        # chunk of rays, whatever the batch size.
        def accumulate(carry, chunk):
            loss, grads = jax.value_and_grad(chunk_loss)(params, chunk)
            return jax.tree.map(jnp.add, carry, (loss, grads)), None

        zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
        chunks = tuple(split(a) for a in (rays_o, rays_d, near, far, target, jitter))
        (loss, grads), _ = jax.lax.scan(accumulate, zero, chunks)

        count = preset.batch_rays * 3
        grads = jax.tree.map(lambda g: g / count, grads)
        opt_state.hyperparams["learning_rate"] = learning_rate
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss / count

    def render(params, rays_o, rays_d, near, far):
        jitter = jnp.full((rays_o.shape[0], preset.num_samples), 0.5, dtype=jnp.float32)
        out = render_rays(params, rays_o, rays_d, near, far, jitter)
        return out["rgb"], out["depth"], out["acc"]

    def query(params, points, directions):
        return apply_field(params, points, directions, preset)

    return optimizer, {"train_step": train_step, "render": render, "query": query}


def _abstract_args(preset: NerfPreset, optimizer):
    def spec(*shape):
        return jax.ShapeDtypeStruct(shape, jnp.float32)

    params = jax.tree.map(lambda a: spec(*a.shape), init_params(preset, 0))
    opt_state = jax.eval_shape(optimizer.init, params)
    rays, samples = preset.batch_rays, preset.num_samples
    render_rays = preset.render_rays
    return {
        "train_step": (params, opt_state, spec(rays, 3), spec(rays, 3), spec(rays), spec(rays),
                       spec(rays, 3), spec(rays, samples), spec()),
        "render": (params, spec(render_rays, 3), spec(render_rays, 3), spec(render_rays),
                   spec(render_rays)),
        "query": (params, spec(preset.query_points, 3), spec(preset.query_points, 3)),
    }


def compile_programs(preset: NerfPreset) -> dict:
    """Compile the preset's programs and return them serialised (picklable bytes + trees)."""
    from jax.experimental import serialize_executable

    optimizer, functions = _functions(preset)
    abstract = _abstract_args(preset, optimizer)
    serialised = {}
    for name in PROGRAM_NAMES:
        compiled = jax.jit(functions[name]).lower(*abstract[name]).compile()
        serialised[name] = serialize_executable.serialize(compiled)
    logger.info("Compiled the NeRF programs of preset %r", preset.name)
    return {"preset": preset, "programs": serialised,
            "initial_opt_state": _initial_opt_state(preset, optimizer)}


def _initial_opt_state(preset: NerfPreset, optimizer):
    params = init_params(preset, 0)
    return jax.device_get(optimizer.init(params))


_LOADED: dict = {}


def load_programs(compiled: dict | None, preset: NerfPreset) -> Programs:
    """Deserialise programs from :func:`compile_programs`, once per process and preset.

    With ``compiled=None``, or when loading fails, the programs are compiled here instead.
    """
    key = (preset, None if compiled is None else _fingerprint(compiled))
    if key in _LOADED:
        return _LOADED[key]

    optimizer, functions = _functions(preset)
    loaded = None
    initial_opt_state = None
    if compiled is not None:
        from jax.experimental import serialize_executable
        try:
            loaded = {name: serialize_executable.deserialize_and_load(*compiled["programs"][name])
                      for name in PROGRAM_NAMES}
            initial_opt_state = compiled["initial_opt_state"]
        except Exception as error:  # XLA raises its own runtime error types here
            logger.warning("Cannot load the NeRF programs compiled on the client (%s); "
                           "compiling on this worker, which needs more memory", error)
    if loaded is None:
        loaded = {name: jax.jit(fn) for name, fn in functions.items()}
        initial_opt_state = _initial_opt_state(preset, optimizer)

    _LOADED.clear()
    _LOADED[key] = Programs(preset=preset, initial_opt_state=initial_opt_state, **loaded)
    return _LOADED[key]


def _fingerprint(compiled: dict) -> str:
    digest = hashlib.sha1()
    for name in PROGRAM_NAMES:
        digest.update(compiled["programs"][name][0])
    return digest.hexdigest()
