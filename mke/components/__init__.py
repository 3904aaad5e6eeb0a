"""The components ``mke server`` runs, one small class each (see DESIGN.md)."""
