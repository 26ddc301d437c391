-- Argus extension: a region's outline (JSON rings of {x, y}), kept when click-to-segment drew it.
ALTER TABLE regions ADD COLUMN polygon TEXT;
