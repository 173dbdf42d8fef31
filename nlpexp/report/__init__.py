"""What runs say: the console of a run (console.py), experiment loggers (loggers.py), the metrics' arithmetic
(metrics.py), and reports over run folders: the table, plots and markdown (tables.py, `nlpexp-report`) and
report.html (html.py)."""
