"""A NeRF per identity, in JAX: encoding, field, sampler, renderer, losses, training, meshes.

Importing this package does not import JAX; the modules that need it do.
"""
