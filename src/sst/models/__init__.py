"""Single-device model definitions (no training-method code); import submodules directly."""
