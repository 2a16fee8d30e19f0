-- What went wrong in one run: the failed scenes and groups of the commits it made, and the index rows
-- its catalog was the first to reject.
-- Query parameter: run_id (STRING, printed at the end of the run and stored in its report).
SELECT stage, error_class, mgrs_tile, period, product_id, message
FROM `{project}.{dataset}.evi_failures`
WHERE run_id = @run_id
UNION ALL
SELECT CONCAT('catalog:', stage), 'RejectedIndexRow', mgrs_tile, '', product_id, reason
FROM `{project}.{dataset}.evi_rejected`
WHERE run_id = @run_id
ORDER BY stage, mgrs_tile, product_id
