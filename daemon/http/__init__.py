"""HTTP: health, metrics, the imports API and the activity log page."""
