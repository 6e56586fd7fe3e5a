-- Failed sign-ins (and wrong current passwords on a password change) by account e-mail AND client
-- address, so the throttle can tell an address that failed from one that did not (functions/accounts/
-- throttle.py). Replaces login_failures, whose rows had one or the other; its few minutes of history go.
DROP TABLE login_failures;
CREATE TABLE sign_in_failures (
    email     TEXT NOT NULL,  -- normalised; unknown e-mails too (the answer never says which exist)
    address   TEXT NOT NULL,  -- studio.runtime.addresses.client_address
    failed_at TEXT NOT NULL   -- ISO-8601 UTC
);
CREATE INDEX sign_in_failures_by_email ON sign_in_failures (email, failed_at);
CREATE INDEX sign_in_failures_by_address ON sign_in_failures (address, failed_at);
CREATE INDEX sign_in_failures_by_age ON sign_in_failures (failed_at);
