-- A question the bot asked outside any flow and waits to hear answered (JSON): which of two
-- intents an unsure message meant (`settings.clarify`). NULL when it asks nothing.
ALTER TABLE conversations ADD COLUMN asking TEXT;
