"""What a person reads: ``report.html`` of a run or a comparison (``page``) and the PNG plots (``plots``).

Import the module you need (``deepclust.report.page``, ``deepclust.report.plots``): this package file
imports neither, so drawing a plot never loads the page builder (which reloads a run's data).
"""
