"""Built-in presets (TOML). Shipped in the wheel as vosfx._builtin_presets."""
