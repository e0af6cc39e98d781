-- An agent's shift: the name of one of the pack's calendars; NULL for always on shift.
ALTER TABLE agents ADD COLUMN shift TEXT;
