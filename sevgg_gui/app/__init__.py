"""`sevgg-gui`: the Qt face over the headless core. Views take Results; no model math here."""
