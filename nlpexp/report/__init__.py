"""Reports over run folders: the table, plots and markdown (tables.py, `nlpexp-report`), and report.html (html.py)."""
