-- What went wrong in one run: failed scenes and groups, and the index rows the catalog rejected.
-- Query parameter: run_id (STRING, printed at the end of the run and stored in its report).
SELECT stage, error_class, mgrs_tile, period, product_id, message
FROM `{project}.{dataset}.evi_failures`
WHERE run_id = @run_id
ORDER BY stage, mgrs_tile, product_id
