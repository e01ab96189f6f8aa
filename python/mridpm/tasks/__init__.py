"""MRI tasks built on the samplers, operators and networks: reconstruction first."""
