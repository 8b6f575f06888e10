"""Walkthrough presets shipped with lyra-assets (one TOML file each, documented in place)."""
