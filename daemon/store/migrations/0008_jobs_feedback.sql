-- Rows of an import that were already stored (events that de-duplicated), and a cancel asked for while the
-- job was processing (who asked; the worker stops at its next batch boundary). Nothing depends on the number.
ALTER TABLE jobs ADD COLUMN rows_duplicate INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN cancel_requested TEXT
