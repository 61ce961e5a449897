"""analysis — the data scientist's tool: acceptance by confidence per class, per-class auto-accept thresholds
(bucket-walk, Clopper-Pearson, isotonic), reviewer agreement, and the HTML report.
"""
