-- EVI time series of one MGRS tile: one row per scene, oldest first.
-- Query parameters: tile (STRING, e.g. 55HBU), start and end (TIMESTAMP, inclusive).
SELECT
  DATE(sensing_time) AS day,
  product_id,
  processing_baseline,
  ROUND(evi_mean, 4) AS evi_mean,
  ROUND(evi_p50, 4) AS evi_median,
  valid_pixels,
  ROUND(masked_fraction, 3) AS cloud_masked_fraction
FROM `{project}.{dataset}.evi_scenes`
WHERE mgrs_tile = @tile
  AND sensing_time BETWEEN @start AND @end
ORDER BY sensing_time
