"""rsabench: benchmark representational alignment between vision networks and brains.

Importing the package is cheap: no torch, no data. Heavy modules are imported where they are used.
"""

__version__ = "0.1.0"
