"""Stage 3, where a method plugs in: the plugin API (``initbench.api``), adapters, calibration, the registry.

Packages import only from earlier stages (``tests/test_layout.py``)."""
