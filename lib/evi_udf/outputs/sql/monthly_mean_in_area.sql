-- Mean EVI per month over the composites whose tile footprint meets an area, weighted by the number
-- of valid pixels of each composite. Query parameter: area_wkt (STRING, a WKT polygon in longitude/latitude).
SELECT
  DATE_TRUNC(period_start, MONTH) AS month,
  COUNT(*) AS composites,
  SUM(valid_pixels) AS valid_pixels,
  ROUND(SUM(evi_mean * valid_pixels) / SUM(valid_pixels), 4) AS evi_mean
FROM `{project}.{dataset}.evi_composites`
WHERE ST_INTERSECTS(footprint, ST_GEOGFROMTEXT(@area_wkt))
  AND valid_pixels > 0
GROUP BY month
ORDER BY month
