"""initbench's built-in methods.  Each is registered in initbench's pyproject.toml under the
``initbench.methods`` entry-point group, the same road a third-party plugin takes."""
