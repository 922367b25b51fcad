"""Example user attribution methods for the config's `methods` section (see my_attributions.py).

A package, so that `examples.my_attributions:<function>` imports from the repository root
whatever else is installed under the name `examples`.
"""
