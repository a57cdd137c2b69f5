"""Checks a cbus-bench-compare results.csv: a header and one record per row, each of
the header's 14 fields (the configurations and notes hold commas, so they must
be quoted).  Used by ctest bench_compare_csv_fields.

    check_results_csv.py RESULTS_CSV MIN_RECORDS
"""
import csv
import sys

path, min_records = sys.argv[1], int(sys.argv[2])
with open(path, newline="") as f:
    records = list(csv.reader(f))
header = records[0]
bad = [r for r in records if len(r) != len(header)]
if len(header) != 14 or bad or len(records) - 1 < min_records:
    sys.exit(f"{path}: {len(records) - 1} records, header of {len(header)} fields, "
             f"{len(bad)} records of another length: {bad[:2]}")
print(f"{path}: {len(records) - 1} records of {len(header)} fields")
