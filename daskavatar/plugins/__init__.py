"""Map and reduce steps that a job names with ``plugin_name``; ``NeRF_Avatar`` is built in."""
