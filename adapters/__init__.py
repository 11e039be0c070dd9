"""The built-in adapter plugins, installed as the ``decathlon_adapters`` package."""
