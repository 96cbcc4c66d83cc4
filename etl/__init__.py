"""bulkcapture: capture shipped orders through the Order Management API, exactly once.

The flow, one module per stage::

    read → validate → plan → send → record → report     (reconcile reads records + settlements)
"""

__version__ = "0.1.0"
