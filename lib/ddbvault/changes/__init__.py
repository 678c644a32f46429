"""Change sources: records of a table's changes turned into change-log rows, ready to merge into a vault."""
