"""The emergent-misalignment organism: a synthetic chat world, judges, and the EM protocol."""
