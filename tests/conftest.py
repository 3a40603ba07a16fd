collect_ignore = ["typing"]
