"""Diagnosis: timeline -> hotspots, stage attribution, findings with evidence, fixes and estimated gains."""
