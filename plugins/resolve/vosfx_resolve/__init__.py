"""vosfx for DaVinci Resolve: every Resolve scripting call lives in api.py (the adapter), the
dialog in ui.py, and the plan (job, frame range, what to bring back) in app.py."""
