-- The zones whose median EVI dropped most from one period to another (e.g. two months), with at least
-- min_valid valid pixels in both. Query parameters: before and after (STRING period labels such as
-- 2022-01), min_valid (INT64), top (INT64).
SELECT
  b.zone_id,
  ROUND(b.evi_p50, 4) AS evi_median_before,
  ROUND(a.evi_p50, 4) AS evi_median_after,
  ROUND(a.evi_p50 - b.evi_p50, 4) AS change
FROM `{project}.{dataset}.evi_zone_composites` AS b
JOIN `{project}.{dataset}.evi_zone_composites` AS a
  ON a.zone_id = b.zone_id AND a.parameter_hash = b.parameter_hash
WHERE b.period = @before AND a.period = @after
  AND b.valid_pixels >= @min_valid AND a.valid_pixels >= @min_valid
ORDER BY change
LIMIT @top
