-- Who set the contact's language: NULL when it was detected from the customer's messages
-- (the latest message's language wins), `rule` or `agent:ID` when set explicitly (kept until
-- a person or a rule changes it).
ALTER TABLE contacts ADD COLUMN language_set_by TEXT;
