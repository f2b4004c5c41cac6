"""Importers that turn other tools' merge configs into graphmerge graphs."""
