-- The monthly median EVI of every field inside a district, both being zones of the same zones file: a
-- spatial join in BigQuery (fields whose geometry the district covers). Query parameters: district_id
-- (STRING), start and end (DATE, inclusive, on the periods' first days).
SELECT
  field.zone_id AS field_id,
  c.period,
  c.valid_pixels,
  ROUND(c.evi_p50, 4) AS evi_median
FROM `{project}.{dataset}.evi_zones` AS district
JOIN `{project}.{dataset}.evi_zones` AS field
  ON ST_COVERS(district.geometry, field.geometry) AND field.zone_id != district.zone_id
JOIN `{project}.{dataset}.evi_zone_composites` AS c
  ON c.zone_id = field.zone_id
WHERE district.zone_id = @district_id
  AND c.period_start BETWEEN @start AND @end
  AND c.valid_pixels > 0
ORDER BY field_id, c.period
