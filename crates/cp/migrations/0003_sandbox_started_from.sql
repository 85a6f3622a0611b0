-- How a sandbox's VM first came to run, as its host reports it: 'cold_boot', 'boot_snapshot'
-- (restored from the host's snapshot of the freshly booted image) or 'template'.
ALTER TABLE sandboxes ADD COLUMN started_from TEXT;
