"""Editor plugins, shipped in the wheel as the package data `vosfx._plugins` (see
vosfx/cli/plugins.py::plugins_source). Hosts never import this package."""
