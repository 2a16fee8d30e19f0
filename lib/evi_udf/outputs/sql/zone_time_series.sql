-- EVI time series of one user zone (a field, a farm): one row per Sentinel-2 pass, oldest first, over
-- all the zone's pixels whichever tiles they lie on. Query parameters: zone_id (STRING), start and end
-- (TIMESTAMP, inclusive).
SELECT
  DATE(sensing_time) AS day,
  acquisition,
  ARRAY_TO_STRING(mgrs_tiles, ',') AS tiles,
  valid_pixels,
  total_pixels,
  ROUND(masked_fraction, 3) AS cloud_masked_fraction,
  ROUND(evi_mean, 4) AS evi_mean,
  ROUND(evi_p50, 4) AS evi_median
FROM `{project}.{dataset}.evi_zone_scenes`
WHERE zone_id = @zone_id
  AND sensing_time BETWEEN @start AND @end
ORDER BY sensing_time
