"""Named NeRF settings that a job selects with ``config.preset``.

``paper`` follows the original NeRF (Mildenhall et al., "NeRF: Representing Scenes as Neural
Radiance Fields for View Synthesis", ECCV 2020). It has an 8-layer MLP of width 256 whose
layer 4 (0-based) also receives the encoded position, 10 encoding frequencies for position
and 4 for view direction, and 64 stratified samples per ray. The batch is smaller
than the paper's 4096 rays so a step fits a 512 MB CPU worker. ``small`` is a 4x64 MLP for
tests; it fits in seconds and gives coarse meshes.

``fast`` is for CPU workers: Instant-NGP's hash-grid encoding with one hidden layer of 64
units, an exponential density and 32 samples per ray between bounds from an occupancy grid
(:mod:`daskavatar.nerf.occupancy`). Its chunk sizes keep a 512 MB worker's peak near 370 MiB
on 60 views of 200 x 200 pixels (``benchmarks/nerf_quality.py``).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class NerfPreset:
    """Network, sampling and optimiser settings of one NeRF preset."""

    name: str
    num_layers: int
    """Hidden layers of the density MLP."""
    width: int
    """Units per hidden layer."""
    skip_layer: int
    """Index of the hidden layer whose input also receives the encoded position."""
    num_pos_freqs: int
    """Frequencies of the positional encoding of x."""
    num_dir_freqs: int
    """Frequencies of the positional encoding of the view direction."""
    num_samples: int
    """Stratified samples per ray."""
    batch_rays: int
    """Rays per optimisation step."""
    chunk_rays: int
    """Rays per gradient micro-batch; the step accumulates batch_rays / chunk_rays of them
    so activation memory stays bounded by one chunk."""
    render_rays: int
    """Rays per call of the compiled renderer."""
    query_points: int
    """Points per call of the compiled field query (mesh extraction)."""
    learning_rate: float
    """Adam learning rate at the first step; decays exponentially to learning_rate_final."""
    learning_rate_final: float
    mesh_level: float
    """Density (per world unit) at which marching cubes places the surface."""
    encoding: str = "frequency"
    """Position encoding: ``frequency`` (Fourier features) or ``hash`` (hash grid)."""
    hash_levels: int = 16
    """Hash grid: number of resolutions."""
    hash_features: int = 2
    """Hash grid: features per level."""
    hash_log2_table: int = 15
    """Hash grid: log2 of the table entries per level."""
    hash_base_resolution: int = 16
    """Hash grid: cells per axis of the coarsest level."""
    hash_max_resolution: int = 512
    """Hash grid: cells per axis of the finest level."""
    geo_features: int = 15
    """Hash field: features passed from the density MLP to the colour MLP."""
    density_bias: float = 0.0
    """Hash field: added to the raw density before the exponential."""
    num_importance: int = 0
    """Samples per ray drawn again from the weights of the stratified samples (hierarchical
    sampling with one network); 0 renders the stratified samples only."""
    occupancy_resolution: int = 0
    """Cells per axis of the occupancy grid that bounds each ray; 0 uses the bounding sphere."""
    adam_eps: float = 1e-8
    """Epsilon of Adam; hash tables train better with a small one."""
    radius: float = 1.2
    """Half side of the cube that the hash grid, the occupancy grid and the mesh cover."""

    def hash_grid(self):
        """Return the :class:`~daskavatar.nerf.encoding.HashGrid` of this preset."""
        from daskavatar.nerf.encoding import HashGrid
        return HashGrid(num_levels=self.hash_levels, features_per_level=self.hash_features,
                        log2_table_size=self.hash_log2_table,
                        base_resolution=self.hash_base_resolution,
                        max_resolution=self.hash_max_resolution, radius=self.radius)


PRESETS = {
    "paper": NerfPreset(name="paper", num_layers=8, width=256, skip_layer=4, num_pos_freqs=10,
                        num_dir_freqs=4, num_samples=64, batch_rays=256, chunk_rays=16,
                        render_rays=64, query_points=2048, learning_rate=5e-4,
                        learning_rate_final=5e-5, mesh_level=10.0),
    "small": NerfPreset(name="small", num_layers=4, width=64, skip_layer=2, num_pos_freqs=6,
                        num_dir_freqs=2, num_samples=32, batch_rays=512, chunk_rays=128,
                        render_rays=1024, query_points=8192, learning_rate=5e-3,
                        learning_rate_final=5e-4, mesh_level=10.0),
    "fast": NerfPreset(name="fast", encoding="hash", num_layers=1, width=64, skip_layer=-1,
                       num_pos_freqs=0, num_dir_freqs=2, num_samples=32, batch_rays=1024,
                       chunk_rays=128, render_rays=512, query_points=4096,
                       learning_rate=1e-2, learning_rate_final=1e-3, mesh_level=10.0,
                       hash_levels=16, hash_features=2, hash_log2_table=15,
                       hash_base_resolution=16, hash_max_resolution=256, geo_features=15,
                       occupancy_resolution=64, adam_eps=1e-15),
}
