"""Input discovery, image decoding and the Zarr feature store."""
